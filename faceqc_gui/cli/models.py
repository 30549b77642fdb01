"""`faceqc models` (placeholder until its issue lands)."""


def register(sub) -> None:
    p = sub.add_parser("models", help="(not implemented yet)")
    p.set_defaults(func=lambda args: print("faceqc models: not implemented yet") or 1)
