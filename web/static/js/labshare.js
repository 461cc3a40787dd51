// LabShare page behaviour: charts declared as data (data-chart), CSRF for htmx, re-init after swaps,
// calendar slots that fill the booking form.
(function () {
  "use strict";

  function initCharts(root) {
    if (!window.echarts) return;
    root.querySelectorAll(".ls-chart[data-chart]").forEach(function (el) {
      if (el.dataset.chartReady) return;
      var chart = echarts.init(el, null, { renderer: "svg" });
      chart.setOption(JSON.parse(el.dataset.chart));
      el.dataset.chartReady = "1";
      new ResizeObserver(function () { chart.resize(); }).observe(el);
    });
  }

  // A click on a free slot of a resource calendar fills the booking form (data-slot-*) and lets the form's
  // change event run the live preview (htmx).
  function fillBookingForm(slot) {
    var form = document.getElementById("booking-form");
    if (!form) return;
    var values = { date: slot.dataset.slotDate, time_from: slot.dataset.slotFrom, time_to: slot.dataset.slotTo,
                   end_date: slot.dataset.slotEndDate };
    var changed = null;
    Object.keys(values).forEach(function (name) {
      var input = form.elements.namedItem(name);
      if (!input || values[name] === undefined) return;
      if (values[name] === "" && name !== "end_date") return;
      input.value = values[name];
      changed = changed || input;
    });
    var days = form.elements.namedItem("days");
    if (days && !days.value) { days.value = "1"; }
    document.querySelectorAll(".is-selected").forEach(function (el) { el.classList.remove("is-selected"); });
    slot.classList.add("is-selected");
    if (changed) changed.dispatchEvent(new Event("change", { bubbles: true }));
  }

  document.addEventListener("click", function (event) {
    var slot = event.target.closest("[data-slot-date]");
    if (slot) { fillBookingForm(slot); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    initCharts(document);
    var token = document.querySelector('meta[name="csrf-token"]');
    document.body.addEventListener("htmx:configRequest", function (event) {
      if (token) event.detail.headers["X-CSRFToken"] = token.content;
    });
    document.body.addEventListener("htmx:afterSwap", function (event) { initCharts(event.target); });
  });
})();
