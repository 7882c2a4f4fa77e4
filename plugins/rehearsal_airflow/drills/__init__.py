"""What drills are made of beyond the runbooks they rehearse: the drill frame (``frame.py``)."""
