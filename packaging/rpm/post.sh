# %post: on first install, enable and start the service where systemd runs
# (not in a container build or a chroot); on upgrade, restart it (%postun).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now sockdiag_exporter.service >/dev/null 2>&1 || :
    fi
fi
exit 0
