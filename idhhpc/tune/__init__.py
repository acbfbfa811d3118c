"""idhhpc.tune"""
