#include "outputs/metrics_server.h"

#include <httplib.h>

#include "common/errors.h"

namespace rstwatch {

struct MetricsServer::Impl {
    httplib::Server server;
};

MetricsServer::MetricsServer(const ListenAddress &address, const Metrics &metrics) : impl_(std::make_unique<Impl>())
{
    auto &svr = impl_->server;
    // One worker thread: scrapes are rare and small.
    svr.new_task_queue = [] { return new httplib::ThreadPool(1); };
    svr.set_read_timeout(5, 0);
    svr.set_write_timeout(5, 0);
    svr.Get("/metrics", [&metrics](const httplib::Request &, httplib::Response &res) {
        res.set_content(metrics.render(self_rss_bytes()), "text/plain; version=0.0.4; charset=utf-8");
    });
    svr.Get("/", [](const httplib::Request &, httplib::Response &res) {
        res.set_content("rstwatch: metrics at /metrics\n", "text/plain");
    });
    std::string where = (address.host.find(':') != std::string::npos ? "[" + address.host + "]" : address.host) + ":" +
                        std::to_string(address.port);
    if (address.port == 0) {
        int port = svr.bind_to_any_port(address.host);
        if (port <= 0)
            throw FatalError("cannot serve metrics on " + where, "is the address one of this host's?");
        port_ = static_cast<uint16_t>(port);
    } else {
        if (!svr.bind_to_port(address.host, address.port))
            throw FatalError("cannot serve metrics on " + where + ": address in use or not local",
                             "pick another --metrics port");
        port_ = address.port;
    }
    thread_ = std::thread([this] { impl_->server.listen_after_bind(); });
}

MetricsServer::~MetricsServer()
{
    impl_->server.stop();
    if (thread_.joinable())
        thread_.join();
}

}  // namespace rstwatch
