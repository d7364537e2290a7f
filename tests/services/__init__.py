"""Tests of the OEP-52 use-case services (catalog replica, xAPI/Caliper feed)."""
