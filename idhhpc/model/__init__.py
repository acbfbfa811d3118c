"""idhhpc.model"""
