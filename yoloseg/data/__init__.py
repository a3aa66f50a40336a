"""yoloseg.data"""
