"""Core of LabShare: settings, database plumbing, accounts, money and time helpers, errors, audit log.

Imports no Flask: everything here is used by the web app, the CLI and the ingest worker alike.
"""
