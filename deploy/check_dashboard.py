#!/usr/bin/env python3
"""Checks that a Grafana dashboard (and optionally alerting rules) query only Forge's metrics.

    deploy/check_dashboard.py deploy/grafana/forge-dashboard.json [metrics.txt]
        [--rules deploy/prometheus/forge-alerts.yml] [--prometheus http://127.0.0.1:9090]

Every PromQL expression of the dashboard (panel targets, template variable queries) is scanned
for metric names and for the labels its selectors match on; with --rules, so is every rule's
expr. A metric is known when it is in the coordinator's documented list below (METRICS; a
histogram also as NAME_bucket, NAME_sum and NAME_count), or, when metrics.txt is given (a dump
of the coordinator's /metrics, text format 0.0.4:
    curl -H "Authorization: Bearer $(cat STATE_DIR/admin.token)" http://HOST:PORT/metrics
), when it appears in that dump. With a dump, the documented list and the dump are also
compared and the differences reported (as warnings: a per-job series is absent while no job is
active, unless the exposition still has its # TYPE line).

With --prometheus URL, each expression is also evaluated by that Prometheus (instant query,
Grafana's variables replaced by match-all values and fixed ranges): a query Prometheus rejects
is an error; one that returns nothing is reported.

Exit status: 0 when every name and label is known (and every query is accepted), 1 otherwise,
2 on bad usage.
"""
import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

# The coordinator's metrics: name -> (type, labels). Keep in step with deploy/README.md.
METRICS = {
    # gauges
    "forge_jobs": ("gauge", {"state"}),
    "forge_queue_length": ("gauge", set()),
    "forge_queue_oldest_wait_seconds": ("gauge", set()),
    "forge_workers": ("gauge", {"state"}),
    "forge_worker_heartbeat_age_seconds": ("gauge", {"worker"}),
    "forge_worker_devices": ("gauge", {"worker", "kind"}),
    "forge_worker_ranks": ("gauge", {"worker"}),
    "forge_job_info": ("gauge", {"job_id", "tenant", "name", "state"}),
    "forge_job_step": ("gauge", {"job_id", "tenant"}),
    "forge_job_total_steps": ("gauge", {"job_id", "tenant"}),
    "forge_job_loss": ("gauge", {"job_id", "tenant"}),
    "forge_job_learning_rate": ("gauge", {"job_id", "tenant"}),
    "forge_job_tokens_per_second": ("gauge", {"job_id", "tenant"}),
    "forge_job_source_tokens": ("gauge", {"job_id", "tenant", "source"}),
    "forge_job_eta_seconds": ("gauge", {"job_id", "tenant"}),
    "forge_job_mfu": ("gauge", {"job_id", "tenant"}),
    "forge_job_attempt": ("gauge", {"job_id", "tenant"}),
    "forge_alerts_queued": ("gauge", set()),
    "forge_coordinator_start_time_seconds": ("gauge", set()),
    "forge_build_info": ("gauge", {"version"}),
    # counters
    "forge_jobs_submitted_total": ("counter", set()),
    "forge_jobs_finished_total": ("counter", {"state"}),
    "forge_job_restarts_total": ("counter", set()),
    "forge_checkpoints_committed_total": ("counter", set()),
    "forge_checkpoint_bytes_total": ("counter", set()),
    "forge_rpc_requests_total": ("counter", {"method", "code"}),
    "forge_alerts_total": ("counter", {"event", "outcome"}),
    "forge_http_requests_total": ("counter", {"handler", "code"}),
    # histograms
    "forge_queue_wait_seconds": ("histogram", {"reason"}),
    "forge_scheduler_pass_duration_seconds": ("histogram", set()),
    "forge_checkpoint_size_bytes": ("histogram", set()),
    "forge_checkpoint_upload_duration_seconds": ("histogram", set()),
    "forge_rpc_duration_seconds": ("histogram", {"method"}),
}

# Series Prometheus makes itself for every target, allowed in rules (not from the coordinator).
SYNTHETIC = {"up": set(), "scrape_duration_seconds": set(), "scrape_samples_scraped": set()}

# Labels Prometheus attaches to every scraped series (target labels), and `le` on buckets.
TARGET_LABELS = {"job", "instance", "__name__"}

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace",
    "last_over_time", "ln", "log10", "log2", "max_over_time", "min_over_time", "minute", "month",
    "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "and", "or", "unless", "inf", "nan", "atan2"}
GROUPING = ("by", "without", "on", "ignoring", "group_left", "group_right")

IDENT = re.compile(r"(?<![\w.:$])[a-zA-Z_:][a-zA-Z0-9_:]*")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\[\[[^\]]*\]\]|\$\w+")


def strip_strings(expr):
    return STRING.sub('""', expr)


def selectors(expr):
    """Yields (metric or None, [label names]) for each {...} selector in expr."""
    text = strip_strings(GRAFANA_VAR.sub("X", expr))
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}", text):
        labels = re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2))
        yield m.group(1), labels


def metric_names(expr):
    """The metric names an expression reads (as written, histogram suffixes included)."""
    text = GRAFANA_VAR.sub("X", expr)      # $__rate_interval, ${job}, [[x]]
    text = strip_strings(text)
    text = re.sub(r"\{[^}]*\}", "", text)   # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    # label lists of by (...), on (...), group_left (...) ...
    text = re.sub(r"\b(" + "|".join(GROUPING) + r")\s*\([^)]*\)", r"\1", text)
    names = []
    for m in IDENT.finditer(text):
        word = m.group(0)
        rest = text[m.end():].lstrip()
        if rest.startswith("("):                 # a function or an aggregation
            continue
        if word in KEYWORDS or word in AGGREGATIONS or word in FUNCTIONS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", word):  # never an identifier, but be safe
            continue
        names.append(word)
    return names


def template_exprs(query):
    """PromQL inside a Grafana Prometheus variable query."""
    query = query.strip()
    m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)", query, re.S)
    if m:
        return [m.group(1)], m.group(2)
    if re.fullmatch(r"label_values\(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)", query):
        return [], None
    m = re.fullmatch(r"query_result\((.*)\)", query, re.S)
    if m:
        return [m.group(1)], None
    if query.startswith("metrics(") or query.startswith("label_names("):
        return [], None
    return [query], None


def dashboard_exprs(dash):
    """(where, expr, legend labels, label of a label_values query) for every PromQL in it."""
    out = []

    def walk_panels(panels, path):
        for p in panels:
            title = p.get("title", "?")
            for t in p.get("targets", []) or []:
                expr = t.get("expr")
                if expr:
                    legend = re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}",
                                        t.get("legendFormat", "") or "")
                    out.append((f"{path}panel '{title}' {t.get('refId', '')}", expr, legend, None))
            walk_panels(p.get("panels", []) or [], f"{path}row '{title}' / "
                        if p.get("type") == "row" else path)

    walk_panels(dash.get("panels", []), "")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        q = q or v.get("definition", "")
        exprs, label = template_exprs(q)
        for e in exprs:
            out.append((f"variable '{v.get('name')}'", e, [], label))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation '{a.get('name')}'", a["expr"], [], None))
    return out


def structure_errors(dash):
    """What would make the import fail or the layout break: ids, grid, data sources."""
    errs = []
    if not any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus"
               for i in dash.get("__inputs", [])):
        errs.append("no __inputs entry DS_PROMETHEUS for the prometheus plugin")
    if not dash.get("uid") or not dash.get("title"):
        errs.append("no uid or no title")
    ids, cells = set(), {}
    flat = []
    for p in dash.get("panels", []):
        flat.append(p)
        flat.extend(p.get("panels", []) or [])   # the panels of collapsed rows
    for p in flat:
        title = p.get("title", "?")
        if p.get("id") in ids:
            errs.append(f"panel '{title}': duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            errs.append(f"panel '{title}': bad gridPos {g}")
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells and p.get("type") != "row":
                    errs.append(f"panel '{title}' overlaps '{cells[(x, y)]}'")
                    break
                cells[(x, y)] = title
            else:
                continue
            break
        for t in p.get("targets", []) or []:
            uid = (t.get("datasource") or p.get("datasource") or {}).get("uid", "")
            if uid not in ("${datasource}", "$datasource", "${DS_PROMETHEUS}"):
                errs.append(f"panel '{title}': data source {uid!r} is neither $datasource "
                            "nor ${DS_PROMETHEUS}")
    return errs


def rules_exprs(path):
    try:
        import yaml
    except ImportError:
        sys.exit("--rules needs PyYAML (apt-get install python3-yaml)")
    with open(path) as f:
        doc = yaml.safe_load(f)
    out = []
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            name = r.get("alert") or r.get("record")
            out.append((f"rule '{name}' ({path})", str(r["expr"]), [], None))
    return out


def parse_dump(path):
    """name -> (type or None, labels, samples) from a text-format exposition."""
    found = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 4:
                    found.setdefault(parts[2], [parts[3], set(), 0])[0] = parts[3]
                continue
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
            if not m:
                continue
            name, labels = m.group(1), set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="',
                                                       m.group(3) or ""))
            base = name
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and found.get(name[:-len(suffix)], [None])[0] in (
                        "histogram", "summary"):
                    base = name[:-len(suffix)]
                    labels.discard("le")
                    labels.discard("quantile")
            entry = found.setdefault(base, [None, set(), 0])
            entry[1] |= labels
            entry[2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in found.items()}


def expand(known):
    """Names usable in PromQL: histograms also as _bucket/_sum/_count."""
    usable = {}
    for name, (kind, labels) in known.items():
        usable[name] = set(labels)
        if kind in ("histogram", "summary"):
            usable[name + "_bucket"] = set(labels) | {"le"}
            usable[name + "_sum"] = set(labels)
            usable[name + "_count"] = set(labels)
            if kind == "histogram":
                usable.pop(name, None)   # a classic histogram has no series of its own name
    return usable


def substitute(expr):
    """Grafana's variables, replaced by values Prometheus accepts."""
    fixed = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h",
             "__range_s": "3600", "__interval_ms": "60000", "__range_ms": "3600000"}
    expr = re.sub(r"\$\{?(__\w+)\}?", lambda m: fixed.get(m.group(1), "1m"), expr)
    return re.sub(r"\$\{[^}]*\}|\[\[[^\]]*\]\]|\$\w+", ".*", expr)


def query_prometheus(base, expr):
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except Exception:
            return None, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)
    if body.get("status") != "success":
        return None, body.get("error", "query failed")
    return body["data"], None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dashboard", help="Grafana dashboard JSON")
    ap.add_argument("metrics", nargs="?", help="a dump of the coordinator's /metrics")
    ap.add_argument("--rules", action="append", default=[], help="a Prometheus rules file")
    ap.add_argument("--prometheus", help="evaluate every expression on this Prometheus")
    args = ap.parse_args()

    with open(args.dashboard) as f:
        dash = json.load(f)
    items = dashboard_exprs(dash)
    for path in args.rules:
        items += rules_exprs(path)

    errors, warnings = structure_errors(dash), []
    known = dict(METRICS)
    if args.metrics:
        dump = parse_dump(args.metrics)
        for name in sorted(set(METRICS) - set(dump)):
            warnings.append(f"documented metric {name} is not in {args.metrics}")
        for name in sorted(set(dump) - set(METRICS)):
            warnings.append(f"{args.metrics} has {name}, which is not documented")
        for name in sorted(set(METRICS) & set(dump)):
            kind, labels = METRICS[name]
            dkind, dlabels, _ = dump[name]
            if dkind and dkind != kind:
                warnings.append(f"{name}: documented as {kind}, exposed as {dkind}")
            if dlabels and dlabels != labels:
                warnings.append(f"{name}: documented labels {sorted(labels)}, "
                                f"exposed {sorted(dlabels)}")
        # A metric the dump declares without a single series yet (forge_job_mfu while no GPU
        # job runs) keeps its documented labels; one with series has the labels it shows.
        known = {name: [kind, labels if samples or name not in METRICS else METRICS[name][1]]
                 for name, (kind, labels, samples) in dump.items()}
    usable = expand(known)
    usable.update(SYNTHETIC)

    used = set()
    for where, expr, legend, var_label in items:
        names = metric_names(expr)
        if not names and "label_values" not in where:
            if not re.search(r"\btime\s*\(", expr):
                warnings.append(f"{where}: no metric found in {expr!r}")
        for name in names:
            used.add(name)
            if name not in usable:
                errors.append(f"{where}: unknown metric {name!r} in {expr!r}")
        labels_in_expr = set()
        for name, labels in selectors(expr):
            allowed = usable.get(name) if name else None
            for label in labels:
                labels_in_expr.add(label)
                if allowed is not None and label not in allowed | TARGET_LABELS:
                    errors.append(f"{where}: {name} has no label {label!r} in {expr!r}")
        # Labels a legend or a label_values() can show: those of the metrics read, the
        # target's labels and the ones label_replace/count_values may make (not used here).
        possible = set(TARGET_LABELS) | {"le"}
        for name in names:
            possible |= usable.get(name, set())
        for label in legend + ([var_label] if var_label else []):
            if label not in possible:
                errors.append(f"{where}: label {label!r} is on none of {sorted(set(names))}")

    if args.prometheus:
        for where, expr, _, _ in items:
            data, err = query_prometheus(args.prometheus, substitute(expr))
            if err:
                errors.append(f"{where}: Prometheus rejects {substitute(expr)!r}: {err}")
            elif data["resultType"] in ("vector", "matrix") and not data["result"]:
                warnings.append(f"{where}: no data now for {substitute(expr)!r}")

    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"error: {e}")
    print(f"{args.dashboard}: {len(items)} expressions, {len(used)} metrics used "
          f"({', '.join(sorted(used))}); {len(errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
