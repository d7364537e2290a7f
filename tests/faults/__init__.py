"""Fault harness: producers and consumers that log outside the system, fault schedules, a checker."""
