# A function whose import fails: the container can never serve it.
import iluvatar_e2e_no_such_module  # noqa: F401


def main(args):
    return {"unreachable": True}
