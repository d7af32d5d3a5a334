# %pre: create the system user and group the service runs as (kept on
# removal, so files it wrote never pass to a recycled uid).
getent group sockdiag_exporter >/dev/null || groupadd -r sockdiag_exporter
getent passwd sockdiag_exporter >/dev/null || \
    useradd -r -g sockdiag_exporter -d / -s /sbin/nologin \
        -c "sockdiag_exporter Prometheus exporter" sockdiag_exporter
exit 0
