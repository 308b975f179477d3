package api

import "github.com/tensorguard/tensorguardflow/internal/wire"

// The rollout routes' part of the OpenAPI document (docs/rollouts.md).

func integer(desc string, lo, hi int) obj {
	o := obj{"type": "integer", "minimum": lo, "description": desc}
	if hi > lo {
		o["maximum"] = hi
	}
	return o
}

var rolloutJobStates = []string{"pending", "notified", "in_progress", "succeeded", "failed", "refused", "timed_out", "skipped", "cancelled"}

// withRolloutSchemas adds the rollout schemas to s.
func withRolloutSchemas(s obj) obj {
	count := func(desc string) obj { return integer(desc, 0, 0) }
	countProps := obj{
		"total": count("jobs"), "pending": count("waiting for their wave or a free slot"),
		"in_flight": count("notified or in progress"), "succeeded": count(""),
		"failed": count("failed, refused or timed out"), "skipped": count("device not eligible (quarantined, revoked, no longer selected)"),
		"cancelled": count("by an abort or a rollback"),
	}
	pkg := object("", []string{"id", "name", "version", "size"}, obj{
		"id": str("lowercase hex SHA-256 of the .tgsp file; empty for a rollback to an unknown package"), "name": str(""), "version": str(""),
		"size": integer("bytes", 0, 0),
	})
	s["RolloutPackage"] = pkg
	countFields := []string{"total", "pending", "in_flight", "succeeded", "failed", "skipped", "cancelled"}
	s["RolloutCounts"] = object("jobs by state", countFields, countProps)
	rollbackCounts := object("the rollback jobs by state; null before a rollback", countFields, countProps)
	rollbackCounts["type"] = []any{"object", "null"}
	s["RolloutWave"] = object("one wave's install jobs by state",
		[]string{"index", "percent", "state", "size", "pending", "in_flight", "succeeded", "failed", "skipped", "cancelled"}, obj{
			"index":   integer("from 0", 0, 0),
			"percent": integer("cumulative percentage of the eligible devices", 1, 100),
			"state":   enum("passed: an earlier wave (or the rollout completed); active: the current wave", "passed", "active", "waiting"),
			"size":    count("jobs that take part: neither skipped nor cancelled"), "pending": count(""), "in_flight": count(""),
			"succeeded": count(""), "failed": count("failed, refused or timed out"), "skipped": count(""), "cancelled": count(""),
		})
	s["RolloutJob"] = object("a device's install or rollback job",
		[]string{"device_id", "job_id", "kind", "wave", "attempt", "state", "reason", "detail", "report_state", "package",
			"previous_name", "previous_version", "installed_name", "installed_version", "notified_at", "deadline_at", "report_at",
			"finished_at", "updated_at"}, obj{
			"device_id": str("dev-…"), "job_id": str("job-…: the id on the device's topics and routes"),
			"kind":    enum("", wire.JobInstall, wire.JobRollback),
			"wave":    integer("", 0, 0),
			"attempt": integer("notifications so far; 0 before the job is released", 0, 0),
			"state":   enum("", rolloutJobStates...),
			"reason":  str("machine-readable: the device's (SELF_TEST, POLICY_DENY, …) or the control plane's (DEADLINE, QUARANTINED, NOT_SELECTED, DEVICE_REVOKED, ABORTED, ROLLBACK)"),
			"detail":  str(""),
			"report_state": enum("the device's last report (\"\": none)", "", wire.JobReceived, wire.JobDownloading, wire.JobVerifying,
				wire.JobPolicy, wire.JobKeyGrant, wire.JobInstalling, wire.JobSelfTest, wire.JobCommitted, wire.JobFailed, wire.JobRefused, wire.JobRolledBack),
			"package":           ref("RolloutPackage"),
			"previous_name":     str("the package active before, as the device reported it"),
			"previous_version":  str(""),
			"installed_name":    str("the package active after the device's last report"),
			"installed_version": str(""),
			"notified_at":       nullable("string", "date-time", ""),
			"deadline_at":       nullable("string", "date-time", "when the attempt times out"),
			"report_at":         nullable("string", "date-time", ""),
			"finished_at":       nullable("string", "date-time", ""),
			"updated_at":        dateTime(""),
		})
	rolloutFields := []string{"id", "fleet_id", "package", "selector", "waves", "success_threshold", "failure_threshold",
		"max_concurrent", "device_timeout", "retries", "state", "reason", "detail", "current_wave", "acked_failures",
		"wave_status", "counts", "rollback", "created_by", "created_at", "updated_at", "finished_at"}
	s["Rollout"] = object("a rollout; GET /api/v1/rollouts/{id} and the actions' answers list its jobs", rolloutFields, obj{
		"id": str("rol-…"), "fleet_id": str("flt-…"), "package": ref("RolloutPackage"),
		"selector":          obj{"type": "object", "additionalProperties": obj{"type": "string"}, "description": "labels a device must all have"},
		"waves":             arrayOf(integer("cumulative percentage", 1, 100)),
		"success_threshold": integer("per cent of a wave that must succeed before the next starts", 0, 100),
		"failure_threshold": integer("per cent of failed devices (of the waves started) that pauses the rollout", 0, 100),
		"max_concurrent":    integer("jobs in flight at once; 0: no bound", 0, 0),
		"device_timeout":    str("per attempt, Go duration"),
		"retries":           integer("notifications again after a timeout", 0, 0),
		"state":             enum("", "running", "paused", "completed", "aborted", "rolling_back", "rolled_back"),
		"reason":            str("why it is in its state: FAILURE_THRESHOLD, SUCCESS_THRESHOLD, OPERATOR, or \"\""),
		"detail":            str("in words"),
		"current_wave":      integer("index into waves", 0, 0),
		"acked_failures":    integer("failures the last resume acknowledged", 0, 0),
		"wave_status":       arrayOf(ref("RolloutWave")),
		"counts":            ref("RolloutCounts"),
		"rollback":          rollbackCounts,
		"created_by":        str("op-…"),
		"created_at":        dateTime(""),
		"updated_at":        dateTime(""),
		"finished_at":       nullable("string", "date-time", "completed, aborted or rolled back"),
		"jobs":              arrayOf(ref("RolloutJob")),
	})
	s["RolloutCreate"] = object("absent fields take their defaults", []string{"package", "fleet"}, obj{
		"package":           str("NAME@VERSION or a package id of the registry"),
		"fleet":             str("fleet id or name"),
		"selector":          obj{"type": "object", "additionalProperties": obj{"type": "string"}, "description": "labels a device must all have (default: none)"},
		"waves":             arrayOf(integer("cumulative percentages, strictly increasing, ending at 100 (default [100])", 1, 100)),
		"success_threshold": integer("default 100", 0, 100),
		"failure_threshold": integer("default 10; 0 pauses at the first failure", 0, 100),
		"max_concurrent":    integer("default 0: no bound", 0, MaxRolloutConcurrent),
		"device_timeout":    str("1s to 7d, default 1h"),
		"retries":           integer("default 0", 0, 100),
	})
	s["RolloutAction"] = object("optional", []string{}, obj{"reason": str("at most 256 characters; recorded as the rollout's detail and audited")})
	s["Job"] = object("wire.Job", []string{"schema", "id", "rollout_id", "kind", "package", "publishers", "attempt", "created_at"}, obj{
		"schema": enum("", wire.JobSchema), "id": str("job-…"), "rollout_id": str("rol-…"),
		"kind": enum("", wire.JobInstall, wire.JobRollback),
		"package": object("wire.PackageRef", []string{"id", "name", "version", "size", "url"}, obj{
			"id": str("lowercase hex SHA-256 of the .tgsp file"), "name": str(""), "version": str(""), "size": integer("bytes", 0, 0),
			"url": str("/api/v1/device/packages/<id>, range requests supported"),
		}),
		"publishers": arrayOf(b64("a pinned signer public key (tgsp key bytes)")),
		"attempt":    integer("from 1; a retried job keeps its id", 1, 0),
		"deadline":   dateTime("when the control plane stops waiting for a final report"),
		"created_at": dateTime(""),
	})
	return s
}

// rolloutOperations are the rollout routes, the operators' and the
// devices'.
func rolloutOperations() []opDoc {
	return []opDoc{
		{"get", "/api/v1/rollouts", "listRollouts", "List rollouts, newest first", "viewer", []obj{
			queryParam("fleet", "fleet id or name", obj{"type": "string"}, false),
			queryParam("state", "running, paused, completed, aborted, rolling_back or rolled_back", obj{"type": "string"}, false),
		}, "", false, 200, arrayOf(ref("Rollout")), []int{404}},
		{"post", "/api/v1/rollouts", "createRollout", "Roll a registry package out to a fleet in waves", "operator", nil, "RolloutCreate", false, 201, ref("Rollout"), []int{404, 409, 503}},
		{"get", "/api/v1/rollouts/{id}", "getRollout", "A rollout with its waves and every device's job", "viewer", nil, "", false, 200, ref("Rollout"), []int{404}},
		{"post", "/api/v1/rollouts/{id}/pause", "pauseRollout", "Pause a running rollout: no new job is released", "operator", nil, "RolloutAction", true, 200, ref("Rollout"), []int{404, 409, 503}},
		{"post", "/api/v1/rollouts/{id}/resume", "resumeRollout", "Resume a paused rollout (acknowledging the failures so far)", "operator", nil, "", false, 200, ref("Rollout"), []int{404, 409, 503}},
		{"post", "/api/v1/rollouts/{id}/abort", "abortRollout", "Abort a rollout for good: jobs not started are cancelled", "operator", nil, "RolloutAction", true, 200, ref("Rollout"), []int{404, 409, 503}},
		{"post", "/api/v1/rollouts/{id}/rollback", "rollbackRollout", "Roll the devices that installed the package back to their previous one", "operator", nil, "RolloutAction", true, 200, ref("Rollout"), []int{404, 409, 503}},
		{"get", "/api/v1/device/jobs", "deviceJobs", "The device's jobs in flight, oldest first", "mtls", nil, "", false, 200, arrayOf(ref("Job")), []int{503}},
		{"get", "/api/v1/device/jobs/{id}", "deviceJob", "One job of the device; 410 JOB_CANCELLED when an abort or rollback cancelled it", "mtls", nil, "", false, 200, ref("Job"), []int{404, 410, 503}},
	}
}
