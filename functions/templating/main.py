# FunctionBench "templating" (chameleon there): an HTML table of generated rows rendered with
# Jinja2 (from requirements.txt), with autoescaping. Arguments: rows (default 500), seed (default 1).
import random
import time

import jinja2

TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    """<html><head><title>{{ title }}</title></head><body>
<table>
{%- for row in rows %}
  <tr class="{{ loop.cycle('odd', 'even') }}"><td>{{ row.id }}</td><td>{{ row.name }}</td><td>{{ '%.2f' % row.value }}</td></tr>
{%- endfor %}
</table></body></html>"""
)


def main(args):
    count = int(args.get("rows", 500))
    if count < 0 or count > 1_000_000:
        raise ValueError("rows must be in 0..1000000, got %d" % count)
    rnd = random.Random(int(args.get("seed", 1)))
    rows = [{"id": i, "name": "row-%d" % rnd.randrange(10**6), "value": rnd.random() * 1000} for i in range(count)]
    if rows:
        rows[0]["name"] = "<script>alert(1)</script>"  # must come out escaped
    t = time.perf_counter()
    html = TEMPLATE.render(title="Generated table", rows=rows)
    ms = (time.perf_counter() - t) * 1000
    return {"body": {"rows": html.count("<tr "), "bytes": len(html.encode()),
                     "escaped": "&lt;script&gt;" in html and "<script>" not in html, "ms": round(ms, 3)}}
