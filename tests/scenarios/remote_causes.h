// The causes again, with the backend on another host: a QEMU guest running
// one of Debian's kernels (testlab::RemoteHost), on a tap device, while nginx
// and the agent run here. The agent then sees only nginx's side of each
// reset, as in most deployments, and must name the cause only where that
// side rules out the others; otherwise `unknown`, with the candidates and
// what is missing in its evidence. Each scenario says what happened
// (actual_cause) and what the agent must say (expected_cause), which
// differ where nginx's side cannot tell.
#pragma once

#include <memory>
#include <vector>

#include "remote_host.h"
#include "scenario_harness.h"

namespace rstwatch::scenarios {

// The backend host, and this host's route to the networks behind it (the
// middlebox and MTU scenarios put their backends in namespaces inside the
// guest, which routes for them): 198.19.200.0/24 via the guest. Made before
// the run's NetnsLab, which then keeps clear of that block.
class RemoteBackends {
public:
    RemoteBackends();
    ~RemoteBackends();
    testlab::RemoteHost &host() { return *host_; }

    // One scenario per cause, in the order the harness must run them: the
    // backend host's power cycle comes last (it ends every other backend in
    // the guest). ttl_evidence: the agent runs with --ttl-evidence.
    std::vector<std::unique_ptr<Scenario>> scenarios(bool ttl_evidence);

private:
    std::unique_ptr<testlab::RemoteHost> host_;
};

// Whether this run may boot a backend VM: not inside the kernel matrix's own
// guests (RSTWATCH_REMOTE_BACKENDS=no), where a VM in a VM takes minutes.
bool remote_backends_enabled();

}  // namespace rstwatch::scenarios
