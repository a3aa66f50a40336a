"""yoloseg.loss"""
