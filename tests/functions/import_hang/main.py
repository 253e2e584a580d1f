# A function whose import never finishes: its cold start must fail within the worker's
# start timeout, and the worker must keep serving others.
import time

time.sleep(3600)


def main(args):
    return {"unreachable": True}
