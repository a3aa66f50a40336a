"""yoloseg.nn"""
