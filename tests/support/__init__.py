"""Test support: tiny jobs, toy models and data, real-server helpers; importable by worker processes."""
