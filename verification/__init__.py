"""Pending verification (待核查): the rules that raise states (`states.py`), re-checking only what a
day's changes reach (`recheck.py`), opening and closing tasks (`tasks.py`) and their working-day
deadlines (`workdays.py`). Pure pandas over the linked roles; above `linkage/`, below `exchange/`.
"""
