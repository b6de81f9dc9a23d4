"""Log records of Kubernetes components (cert-manager, istio-csr), one string per record.

klog writes a value that holds a line break over several lines: ``key=<``, then each line of
the value indented by a tab, then `` >`` (k8s.io/klog/v2 internal/serialize/keyvalues.go,
writeStringValue), after which the record's next key-values follow on that same line. Vault's
API errors always hold line breaks ("Error making API request.\\n\\nURL: ...\\nCode: 403.
Errors:\\n\\n* permission denied", as cert-manager wraps them in internal/vault/vault.go), so a
line-by-line reading splits the URL from its refusal.
"""

from __future__ import annotations


def klog_records(text: str) -> list[str]:
    """``text`` as records: a multi-line value is joined into its record, its lines separated by one space."""
    records: list[str] = []
    open_value: list[str] | None = None
    for line in text.splitlines():
        if open_value is not None:
            if line.startswith(" >"):  # the end delimiter, indented by a space (a value line is by a tab);
                # the record's remaining key-values follow it on the same line (logger=..., ...)
                records[-1] += "<" + " ".join(part for part in open_value if part) + ">" + line[2:]
                open_value = None
            else:
                open_value.append(line.removeprefix("\t").strip())
            continue
        if line.endswith("=<"):
            records.append(line[:-1])
            open_value = []
        elif line.strip():
            records.append(line)
    if open_value is not None:  # a log cut mid-value (--tail, --since): keep what there is
        records[-1] += "<" + " ".join(part for part in open_value if part)
    return records
