"""UCF101 facts: the 101 class names, the clip naming scheme and the official group splits.

Class names are spelled as in the clips' `frame_dir` names (`v_<ClassName>_g<GG>_c<CC>`), which
differ from classInd.txt in one place (`HandStandPushups`); the order is classInd's, so a
class's index is its label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pipeline.core.errors import fail

CLASSES: tuple[str, ...] = (
    "ApplyEyeMakeup",
    "ApplyLipstick",
    "Archery",
    "BabyCrawling",
    "BalanceBeam",
    "BandMarching",
    "BaseballPitch",
    "Basketball",
    "BasketballDunk",
    "BenchPress",
    "Biking",
    "Billiards",
    "BlowDryHair",
    "BlowingCandles",
    "BodyWeightSquats",
    "Bowling",
    "BoxingPunchingBag",
    "BoxingSpeedBag",
    "BreastStroke",
    "BrushingTeeth",
    "CleanAndJerk",
    "CliffDiving",
    "CricketBowling",
    "CricketShot",
    "CuttingInKitchen",
    "Diving",
    "Drumming",
    "Fencing",
    "FieldHockeyPenalty",
    "FloorGymnastics",
    "FrisbeeCatch",
    "FrontCrawl",
    "GolfSwing",
    "Haircut",
    "Hammering",
    "HammerThrow",
    "HandStandPushups",
    "HandstandWalking",
    "HeadMassage",
    "HighJump",
    "HorseRace",
    "HorseRiding",
    "HulaHoop",
    "IceDancing",
    "JavelinThrow",
    "JugglingBalls",
    "JumpingJack",
    "JumpRope",
    "Kayaking",
    "Knitting",
    "LongJump",
    "Lunges",
    "MilitaryParade",
    "Mixing",
    "MoppingFloor",
    "Nunchucks",
    "ParallelBars",
    "PizzaTossing",
    "PlayingCello",
    "PlayingDaf",
    "PlayingDhol",
    "PlayingFlute",
    "PlayingGuitar",
    "PlayingPiano",
    "PlayingSitar",
    "PlayingTabla",
    "PlayingViolin",
    "PoleVault",
    "PommelHorse",
    "PullUps",
    "Punch",
    "PushUps",
    "Rafting",
    "RockClimbingIndoor",
    "RopeClimbing",
    "Rowing",
    "SalsaSpin",
    "ShavingBeard",
    "Shotput",
    "SkateBoarding",
    "Skiing",
    "Skijet",
    "SkyDiving",
    "SoccerJuggling",
    "SoccerPenalty",
    "StillRings",
    "SumoWrestling",
    "Surfing",
    "Swing",
    "TableTennisShot",
    "TaiChi",
    "TennisSwing",
    "ThrowDiscus",
    "TrampolineJumping",
    "Typing",
    "UnevenBars",
    "VolleyballSpiking",
    "WalkingWithDog",
    "WallPushups",
    "WritingOnBoard",
    "YoYo",
)
NUM_CLASSES = len(CLASSES)
NUM_GROUPS = 25
NUM_SPLITS = 3
GROUPS_PER_TEST_SPLIT = 7

FRAME_DIR_RE = re.compile(r"^v_(?P<cls>[A-Za-z]+)_g(?P<group>\d+)_c(?P<clip>\d+)$")


def frame_dir(label: int, group: int, clip: int) -> str:
    """The clip name UCF101 gives clip `clip` of group `group` of class `label`."""
    return f"v_{CLASSES[label]}_g{group:02d}_c{clip:02d}"


def parse_frame_dir(name: str) -> tuple[str, int, int]:
    """Split `v_<ClassName>_g<GG>_c<CC>` into (class name, group, clip)."""
    match = FRAME_DIR_RE.match(name)
    if match is None:
        raise fail(f"frame_dir {name!r}", "expected a name like v_<ClassName>_g<GG>_c<CC>")
    return match["cls"], int(match["group"]), int(match["clip"])


def test_groups(split: int) -> range:
    """The groups split `split` (1..3) tests on; it trains on every other group of 1..25."""
    if split not in range(1, NUM_SPLITS + 1):
        raise fail("split", f"expected 1, 2 or 3, found {split!r}")
    first = GROUPS_PER_TEST_SPLIT * (split - 1) + 1
    return range(first, first + GROUPS_PER_TEST_SPLIT)


# pytest would otherwise collect the function above as a test wherever it is imported.
test_groups.__test__ = False  # type: ignore[attr-defined]


def official_splits(frame_dirs: Iterable[str]) -> dict[str, list[str]]:
    """The official train1..3 / test1..3 lists of these clips, each in input order."""
    names = list(frame_dirs)
    groups = [parse_frame_dir(name)[1] for name in names]
    held_out = {k: test_groups(k) for k in range(1, NUM_SPLITS + 1)}
    splits = {
        f"train{k}": [n for n, g in zip(names, groups, strict=True) if g not in held_out[k]]
        for k in held_out
    }
    splits.update(
        {
            f"test{k}": [n for n, g in zip(names, groups, strict=True) if g in held_out[k]]
            for k in held_out
        }
    )
    return splits
