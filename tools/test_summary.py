#!/usr/bin/env python3
"""Counts test cases across suites: test_summary.py RESULTS_DIR.

Reads meson's testlog.json files (unit-*.json: each TAP line of each test is one case; a test
binary that crashed without TAP output counts as one failure), pytest's JUnit XML files
(integration-*.xml: skipped counts as failed, a green run skips nothing) and *.result files
("name: pass|fail"). Prints one line per failure, then "N passed, N failed" last; exit 1 if any
failed or nothing ran.
"""
import glob
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

d = sys.argv[1]
passed, failed, failures = 0, 0, []

for path in sorted(glob.glob(os.path.join(d, "unit-*.json"))):
    variant = os.path.basename(path)[5:-5]
    with open(path) as f:
        for line in f:
            t = json.loads(line)
            oks = re.findall(r"^(not ok|ok)\b(.*)$", t.get("stdout", ""), re.M)
            if t["result"] != "OK" and not any(k == "not ok" for k, _ in oks):
                failed += 1
                failures.append(f"unit/{variant}: {t['name']} {t['result']}")
            for kind, rest in oks:
                if kind == "ok":
                    passed += 1
                else:
                    failed += 1
                    failures.append(f"unit/{variant}: {t['name']}: {rest.strip()}")

for path in sorted(glob.glob(os.path.join(d, "integration-*.xml"))):
    variant = os.path.basename(path)[12:-4]
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}.{case.get('name')}"
        bad = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        if bad:
            failed += 1
            failures.append(f"integration/{variant}: {name} ({bad[0]})")
        else:
            passed += 1
    if not list(ET.parse(path).getroot().iter("testcase")):
        failed += 1
        failures.append(f"integration/{variant}: no test ran")

for path in sorted(glob.glob(os.path.join(d, "*.result"))):
    for line in open(path):
        name, _, verdict = line.strip().rpartition(": ")
        if verdict == "pass":
            passed += 1
        else:
            failed += 1
            failures.append(name)

for f in failures:
    print("FAILED", f)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or passed == 0 else 0)
