"""idhhpc.hpc"""
