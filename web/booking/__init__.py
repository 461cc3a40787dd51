"""Booking pages: catalog, resource page with calendar and booking form, my reservations, and the lab
managers' approvals, facility calendar and resource management."""
