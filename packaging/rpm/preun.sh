# %preun: on final removal (not upgrade), stop and disable the service.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now sockdiag_exporter.service >/dev/null 2>&1 || :
fi
exit 0
