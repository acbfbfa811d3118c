"""idhhpc.train"""
