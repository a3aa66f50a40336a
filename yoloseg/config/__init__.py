"""yoloseg.config"""
