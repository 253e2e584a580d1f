# A function with a dependency layer (its requirements.txt is written by the test): reports
# where its dependency came from and what the layer lets it do.
import importlib
import os


def main(args):
    mod = importlib.import_module(args.get("module", "iluprobe"))
    layer = os.environ.get("ILUVATAR_DEPS_DIR", "")
    try:
        with open(os.path.join(layer or "/", "written-by-function"), "w") as f:
            f.write("x")
        wrote = True
    except OSError:
        wrote = False
    return {
        "value": mod.VALUE,
        "file": mod.__file__,
        "layer": layer,
        "wrote_layer": wrote,
        "standby": os.environ.get("ILUVATAR_STANDBY") == "1",
    }
