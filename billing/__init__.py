"""Pricing, reconciliation, charges, innovation vouchers and claims (built by the billing issue)."""
