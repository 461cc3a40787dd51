"""Catalog (facilities, instruments, pilot lines), availability and reservations."""
