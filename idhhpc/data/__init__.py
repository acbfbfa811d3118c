"""idhhpc.data"""
