"""yoloseg.engine"""
