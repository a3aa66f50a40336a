"""Pure tensor functions: boxes, anchors, NMS, masks, polygons."""
