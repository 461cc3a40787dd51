"""Finance pages: billing periods, statements, vouchers and claims; the researcher's charges and estimates."""
