// The HTTP side of metrics.h: GET /metrics on a background thread, with
// cpp-httplib (Debian's libcpp-httplib-dev).
#pragma once

#include <cstdint>
#include <memory>
#include <thread>

#include "outputs/metrics.h"

namespace rstwatch {

// GET /metrics on a background thread. Throws FatalError when it cannot
// listen (port taken, bad address).
class MetricsServer {
public:
    MetricsServer(const ListenAddress &address, const Metrics &metrics);
    ~MetricsServer();
    MetricsServer(const MetricsServer &) = delete;
    MetricsServer &operator=(const MetricsServer &) = delete;

    uint16_t port() const { return port_; }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    uint16_t port_ = 0;
    std::thread thread_;
};

}  // namespace rstwatch
