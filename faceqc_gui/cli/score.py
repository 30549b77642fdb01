"""`faceqc score` (placeholder until its issue lands)."""


def register(sub) -> None:
    p = sub.add_parser("score", help="(not implemented yet)")
    p.set_defaults(func=lambda args: print("faceqc score: not implemented yet") or 1)
