"""idhhpc.evaluate"""
