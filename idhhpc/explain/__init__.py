"""idhhpc.explain"""
