"""yoloseg.export"""
