"""yoloseg.metrics"""
