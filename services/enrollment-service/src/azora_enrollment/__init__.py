"""Azora Enrollment: Student enrollment, waitlists and analytics that never over-enroll."""

__version__ = "0.1.0"
