// LabShare page behaviour: charts declared as data (data-chart), CSRF for htmx, re-init after swaps.
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

  document.addEventListener("DOMContentLoaded", function () {
    initCharts(document);
    var token = document.querySelector('meta[name="csrf-token"]');
    document.body.addEventListener("htmx:configRequest", function (event) {
      if (token) event.detail.headers["X-CSRFToken"] = token.content;
    });
    document.body.addEventListener("htmx:afterSwap", function (event) { initCharts(event.target); });
  });
})();
