"""Bulk import pages: templates to download, a dry run that lists every row's problems, then the import."""
