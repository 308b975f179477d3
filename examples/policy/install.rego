# Example install policy of a TensorGuardFlow fleet (docs/policy.md).
#
# The agent evaluates data.tensorguard.install for every package it is asked
# to install and installs only when allow is true; the reasons are reported
# with the job. This policy admits a package only when
#   * its signer (manifest.publisher_key_id) is a pinned publisher: one of the
#     key ids the agent passes as input.publishers, or one this fleet pins in
#     data.json (data.publishers),
#   * it carries a dp_cert.json whose epsilon and delta are within the fleet's
#     limits (data.max_epsilon, data.max_delta in data.json), and
#   * the device's own attestation verdict is "trusted".
# Push it with: tgctl policy push --fleet FLEET examples/policy
package tensorguard.install

# Deny by default: allow only when no rule below objects.
default allow := false

allow if count(deny) == 0

# The reasons reported with the decision, sorted for stable output.
reasons := sort([r | some r in deny])

# The pinned publishers: the device's (input) and the fleet's (data).
pinned contains key if some key in object.get(input, "publishers", [])

pinned contains key if some key in fleet_publishers

default fleet_publishers := []

fleet_publishers := data.publishers if is_array(data.publishers)

deny contains msg if {
	key := object.get(input, ["manifest", "publisher_key_id"], "")
	not key in pinned
	msg := sprintf("publisher key %q is not pinned for this fleet", [key])
}

deny contains "package has no dp_cert.json: this fleet admits only models trained with differential privacy" if {
	not is_object(object.get(input, "dp_cert", null))
}

# object.get, not input.dp_cert.epsilon: a negated call on an undefined
# reference is undefined, so `not is_number(input.dp_cert.epsilon)` would
# never deny a certificate without epsilon.
deny contains "dp_cert.json has no numeric epsilon" if {
	is_object(input.dp_cert)
	not is_number(object.get(input.dp_cert, "epsilon", null))
}

deny contains "dp_cert.json has no numeric delta" if {
	is_object(input.dp_cert)
	not is_number(object.get(input.dp_cert, "delta", null))
}

deny contains msg if {
	eps := input.dp_cert.epsilon
	is_number(eps)
	eps > data.max_epsilon
	msg := sprintf("dp_cert epsilon %v exceeds the fleet limit max_epsilon %v", [eps, data.max_epsilon])
}

deny contains msg if {
	delta := input.dp_cert.delta
	is_number(delta)
	delta > data.max_delta
	msg := sprintf("dp_cert delta %v exceeds the fleet limit max_delta %v", [delta, data.max_delta])
}

# A bundle without its limits must not admit everything.
deny contains "fleet data has no numeric max_epsilon" if not limits_set.epsilon

deny contains "fleet data has no numeric max_delta" if not limits_set.delta

limits_set.epsilon if is_number(data.max_epsilon)

limits_set.delta if is_number(data.max_delta)

deny contains msg if {
	state := object.get(input, ["attestation", "state"], "unknown")
	state != "trusted"
	msg := sprintf("device attestation is %q, not trusted", [state])
}
