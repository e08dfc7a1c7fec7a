"""Parses a /metrics body with the official Prometheus client's parsers and prints its samples.

Reads the exposition from the file named by argv[1]. Both parsers must accept it: the
OpenMetrics one (what the sidecar serves, strict: `# EOF`, units, counter suffixes) and the
classic Prometheus text one (what older scrapers read). Prints one JSON object: the samples
the OpenMetrics parser found, as [name, labels, value] (+Inf written as "+Inf").
"""

import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

text = open(sys.argv[1], encoding="utf-8").read()
families = list(openmetrics(text))
# The classic parser must read it too (it stops at nothing; a bad line raises).
list(classic(text.replace("# EOF\n", "")))
samples = []
for family in families:
    for sample in family.samples:
        value = "+Inf" if math.isinf(sample.value) else sample.value
        samples.append([sample.name, sample.labels, value])
json.dump({"types": {f.name: f.type for f in families}, "samples": samples}, sys.stdout)
