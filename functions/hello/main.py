# Minimal Ilúvatar function: greets the caller by name.


def main(args):
    name = args.get("name", "stranger")
    return {"body": {"greeting": f"Hello {name}!"}}
