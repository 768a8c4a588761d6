"""rlhf_lessons: the real, tested implementations behind the RLHF course notebooks."""

__version__ = "0.1.0"
