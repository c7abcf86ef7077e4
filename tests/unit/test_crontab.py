"""`crontab --cron debian|cronie|systemd` as pure policy: detection, zone conversion, units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from sbbackup.errors import ConfigError
from sbbackup.policy.crontab import (
    Job,
    detect_cron,
    offset_period,
    on_calendar,
    render_cron,
    shift_cron,
)
from sbbackup.policy.schedules import Schedule

BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")
JOB = Job(["/usr/local/bin/sbbackup"], "/etc/sbbackup/config.yaml", None)
WINTER = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SUMMER = datetime(2026, 7, 4, 12, 0, tzinfo=UTC)


def fires(cron: str, zone: ZoneInfo, start: datetime, end: datetime) -> set[datetime]:
    it = croniter(cron, start.astimezone(zone))
    out: set[datetime] = set()
    while (when := it.get_next(datetime)) < end:
        out.add(when.astimezone(UTC))
    return out


# Each case: (cron, zone, system zone, now). The converted lines, read in the system zone,
# must fire at exactly the instants the schedule fires in its zone, until the offset changes.
CASES = [
    ("0 2 * * *", "Europe/Berlin", "UTC", WINTER),
    ("0 2 * * *", "Europe/Berlin", "UTC", SUMMER),
    ("15 8-18 * * 1-5", "Europe/Berlin", "UTC", WINTER),
    ("30 0 * * 1-5", "Europe/Berlin", "UTC", WINTER),  # weekdays move back across midnight
    ("0 * * * 1", "Europe/Berlin", "UTC", SUMMER),  # one hour list becomes two lines
    ("0 22,23 * * 6", "America/New_York", "UTC", WINTER),  # Saturday 22:00 -> Sunday 03:00
    ("0 0 2,15 * *", "Europe/Berlin", "UTC", WINTER),  # days of the month move too
    ("0 0 2,15 * 1", "Europe/Berlin", "UTC", WINTER),  # both day fields (cron's OR)
    ("0 2 * * *", "Asia/Kolkata", "UTC", WINTER),  # half-hour offset: minutes move
    ("*/20 1-3 * * *", "Asia/Kolkata", "Europe/Berlin", SUMMER),
    ("0 3 * 1-6 *", "Europe/Berlin", "UTC", WINTER),  # months stay put when no day moves
    ("0 2 * * *", "Europe/Berlin", "America/New_York", SUMMER),
]


@pytest.mark.parametrize(("cron", "zone", "system", "now"), CASES)
def test_converted_lines_fire_when_the_schedule_does(
    cron: str, zone: str, system: str, now: datetime
) -> None:
    s = Schedule("s", cron, 7, timezone=zone)
    delta, until = offset_period(ZoneInfo(zone), ZoneInfo(system), now)
    end = until if until is not None else now + timedelta(days=60)
    lines = shift_cron(s, delta)
    want = fires(cron, ZoneInfo(zone), now, end)
    got: set[datetime] = set()
    for line in lines:
        got |= fires(line, ZoneInfo(system), now, end)
    assert want and got == want, (lines, sorted(want ^ got)[:4])
    print(f"{cron!r} in {zone} -> {lines} in {system}: {len(want)} runs until {end:%Y-%m-%d}")


def test_the_period_ends_at_the_next_dst_change() -> None:
    delta, until = offset_period(BERLIN, UTC_ZONE, WINTER)
    assert delta == timedelta(hours=-1) and until == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)
    delta, until = offset_period(ZoneInfo("Asia/Kolkata"), UTC_ZONE, WINTER)
    assert delta == timedelta(hours=-5, minutes=-30) and until is None


def test_the_debian_comment_names_both_times_and_the_rerun() -> None:
    s = Schedule("daily", "0 2 * * *", 7, timezone="Europe/Berlin")
    out = render_cron("debian", [s], JOB, WINTER, UTC_ZONE)
    assert not any(ln.startswith("CRON_TZ") for ln in out.lines)
    note = next(ln for ln in out.lines if ln.startswith("# daily:"))
    assert note.startswith("# daily: 02:00 Europe/Berlin = 01:00 UTC until 2027-03-28 01:00;")
    assert "rerun `sbbackup crontab`" in note
    assert out.lines[-1] == (
        "0 1 * * * /usr/local/bin/sbbackup --config /etc/sbbackup/config.yaml run-schedule daily"
    )
    summer = render_cron("debian", [s], JOB, SUMMER, UTC_ZONE).lines[-1]
    assert summer.startswith("0 0 * * * ")


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("0 0 1 * *", "outside 1-28"),  # the 1st at 00:00 Berlin is the last of a month in UTC
        ("0 0 * 1 1", "month restriction"),
        ("30 0 L * *", "'L' and '#'"),
        ("0 0 * * 1#2", "'L' and '#'"),
    ],
)
def test_days_that_cannot_move_are_refused(cron: str, why: str) -> None:
    s = Schedule("x", cron, 7, timezone="Europe/Berlin")
    with pytest.raises(ConfigError) as info:
        render_cron("debian", [s], JOB, WINTER, UTC_ZONE)
    assert why in info.value.message and "--cron systemd" in info.value.message
    assert info.value.exit_code == 2


def test_cronie_gets_cron_tz_and_local_schedules_first() -> None:
    ss = [
        Schedule("eu", "15 8-18 * * 1-5", 7, timezone="Europe/Berlin"),
        Schedule("daily", "0 2 * * *", 7),
    ]
    lines = [ln for ln in render_cron("cronie", ss, JOB, WINTER, UTC_ZONE).lines if ln[0] != "#"]
    assert lines[0].startswith("0 2 * * * ") and lines[1] == "CRON_TZ=Europe/Berlin"
    assert lines[2].startswith("15 8-18 * * 1-5 ")


def test_a_local_schedule_is_not_converted() -> None:
    s = Schedule("daily", "0 2 * * *", 7)
    out = render_cron("debian", [s], JOB, WINTER, BERLIN)
    assert out.lines[-1].startswith("0 2 * * * ") and "DST" not in "".join(out.lines)


@pytest.mark.parametrize(
    ("cron", "zone", "want"),
    [
        ("0 2 * * *", "Europe/Berlin", ["*-*-* 02:00:00 Europe/Berlin"]),
        ("15 8-18 * * 1-5", "Europe/Berlin", ["Mon..Fri *-*-* 08..18:15:00 Europe/Berlin"]),
        ("0 3 * * 0", "local", ["Sun *-*-* 03:00:00"]),
        ("*/15 * * * 6,0", "local", ["Sun,Sat *-*-* *:00,15,30,45:00"]),
        ("0 4 1 * *", "local", ["*-*-01 04:00:00"]),
        ("0 4 L 2 *", "UTC", ["*-02~01 04:00:00 UTC"]),
        ("0 0 2,15 * 1", "local", ["*-*-02,15 00:00:00", "Mon *-*-* 00:00:00"]),
    ],
)
def test_on_calendar(cron: str, zone: str, want: list[str]) -> None:
    assert on_calendar(Schedule("s", cron, 7, timezone=zone)) == want


def test_systemd_units_quote_and_escape() -> None:
    job = Job(["/opt/sb backup/bin/sbbackup"], "/etc/sb/50%.yaml", "/var/log/sb.log")
    s = Schedule("daily", "0 2 * * *", 7, timezone="Europe/Berlin", description="100% sure")
    service, timer = render_cron("systemd", [s], job, WINTER, UTC_ZONE).files
    assert (service.name, timer.name) == ("sbbackup-daily.service", "sbbackup-daily.timer")
    assert (
        'ExecStart="/opt/sb backup/bin/sbbackup" --config /etc/sb/50%%.yaml run-schedule daily'
        in service.content.splitlines()
    )
    assert "Description=sbbackup schedule daily (100%% sure)" in service.content
    assert "StandardOutput=append:/var/log/sb.log" in service.content
    assert "OnCalendar=*-*-* 02:00:00 Europe/Berlin" in timer.content.splitlines()
    assert "Persistent=true" in timer.content and "Unit=sbbackup-daily.service" in timer.content


def test_detection(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    assert detect_cron(tmp_path)[0] == "debian"  # unknown: times in the system zone
    (tmp_path / "etc/debian_version").write_text("12.11\n")
    assert detect_cron(tmp_path) == ("debian", "Debian without cronie: its cron ignores CRON_TZ")
    dpkg = tmp_path / "var/lib/dpkg"
    dpkg.mkdir(parents=True)
    (dpkg / "status").write_text(
        "Package: cron\nStatus: install ok installed\n\n"
        "Package: cronie\nStatus: deinstall ok config-files\n"
    )
    assert detect_cron(tmp_path)[0] == "debian"
    (dpkg / "status").write_text("Package: cronie\nStatus: install ok installed\nVersion: 1.7\n")
    assert detect_cron(tmp_path)[0] == "cronie"
    (dpkg / "status").unlink()
    sbin = tmp_path / "usr/sbin"
    sbin.mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/busybox").write_text("")
    (sbin / "crond").symlink_to(tmp_path / "bin/busybox")
    assert detect_cron(tmp_path)[0] == "debian"  # busybox crond has no CRON_TZ
    (sbin / "crond").unlink()
    (sbin / "crond").write_text("")
    assert detect_cron(tmp_path)[0] == "cronie"
