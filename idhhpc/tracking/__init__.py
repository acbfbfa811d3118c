"""idhhpc.tracking"""
