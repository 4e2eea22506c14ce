"""Chinese report (报事内容) and follow-up comment (回访意见) text, built compositionally.

A text is a chain of slots (greeting, place, object + fault, duration, severity, repeat cue,
urgency, request, anger, emoji), each drawn by indexing a fragment array, so a million texts
cost a dozen vectorised string concatenations instead of a Python loop. The slots are driven by
the simulated latent state — the resident's temperament sets the tone, a failed earlier repair
adds 又坏了-style cues, an old building adds 管道老化 — with deliberate noise (calm words from
angry people, cues left out, false cues), so the text carries signal that the structured
fields lack without ever being a label.
"""

from __future__ import annotations

import numpy as np
from numpy.dtypes import StringDType

from models.schemas import CATEGORIES

_S = StringDType()

#: Per category: (object, faults, places in the home) of homes (户内); an empty place list
#: means the object is named without a room.
WET = ["厨房", "卫生间", "阳台"]
BATH = ["卫生间", "主卫", "客卫"]
ROOMS = ["客厅", "主卧", "次卧", "书房", "餐厅"]
INDOOR: dict[str, list[tuple[str, list[str], list[str]]]] = {
    "plumbing": [
        ("水龙头", ["漏水", "关不紧", "一直滴水", "出水很小", "松动了", "拧不动"], WET),
        ("下水道", ["堵了", "反味", "排水很慢", "往上返水"], ["厨房", "卫生间"]),
        ("马桶", ["堵了", "漏水", "一直流水", "冲不下去", "水箱不进水", "底座渗水"], BATH),
        ("水管", ["漏水", "爆了", "接头渗水", "有异响", "冻住了", "锈得厉害"], WET),
        ("地漏", ["堵了", "反臭味", "返水"], ["卫生间", "阳台", "淋浴间"]),
        ("洗手盆", ["堵了", "下水慢", "底下漏水"], BATH),
        ("角阀", ["漏水", "拧不动", "坏了"], ["厨房", "卫生间"]),
        ("水表", ["漏水", "一直在转"], []),
        ("花洒", ["漏水", "出水小", "坏了", "开关失灵"], ["淋浴间", "主卫", "客卫"]),
        ("水槽", ["堵了", "下面漏水", "排水不畅"], ["厨房"]),
        ("热水器进水管", ["漏水", "接口滴水"], ["厨房", "卫生间"]),
        ("洗衣机下水", ["堵了", "往外冒水"], ["阳台", "卫生间"]),
    ],
    "electrical": [
        ("插座", ["没电", "冒火花", "松动了", "烧黑了", "接触不良"], ROOMS + ["厨房"]),
        ("灯", ["不亮", "一闪一闪的", "开了没反应"], ROOMS + ["卫生间", "走廊"]),
        ("空气开关", ["老是跳闸", "合不上", "一开就跳"], []),
        ("电路", ["短路了", "有焦糊味", "整屋停电"], ["", "厨房", "卫生间"]),
        ("开关", ["坏了", "按不动", "有时候不灵"], ROOMS),
        ("浴霸", ["不工作", "灯不亮", "一开就跳闸"], BATH),
        ("排气扇", ["不转", "噪音很大"], ["厨房", "卫生间"]),
        ("吸顶灯", ["不亮", "掉下来了", "闪个不停"], ROOMS),
        ("电表箱", ["有响声", "跳闸"], []),
    ],
    "hvac": [
        (
            "空调",
            ["不制冷", "不制热", "滴水", "噪音很大", "开不了机", "漏氟了", "有异味"],
            ["客厅", "主卧", "次卧", "书房", "儿童房"],
        ),
        ("空调外机", ["响声很大", "不转", "震得厉害"], []),
        ("暖气片", ["不热", "漏水", "温度很低", "只有一半热"], ["客厅", "主卧", "次卧", "卫生间"]),
        ("地暖", ["不热", "漏水", "温度不均匀"], ["", "客厅", "主卧"]),
        ("新风系统", ["不工作", "有异味", "风很小"], []),
        ("中央空调", ["不出风", "漏水", "遥控失灵", "出风口滴水"], ["客厅", "主卧", "次卧"]),
    ],
    "fire_safety": [
        ("烟感报警器", ["一直响", "误报", "没电了", "掉下来了"], ["客厅", "走廊", "卧室"]),
        ("燃气报警器", ["误报", "一直响", "亮红灯"], ["厨房"]),
        ("喷淋头", ["漏水", "掉了", "在滴水"], ["客厅", "走廊", "主卧"]),
    ],
    "door_window": [
        ("入户门锁", ["打不开", "锁芯坏了", "卡住了", "钥匙拧不动"], []),
        ("窗户", ["关不严", "漏风", "把手坏了", "玻璃裂了", "推不动"], ROOMS + ["厨房"]),
        ("推拉门", ["卡住了", "滑轨坏了", "关不上"], ["厨房", "阳台", "卫生间"]),
        ("纱窗", ["破了", "掉了", "拉不动"], ["主卧", "次卧", "厨房"]),
        (
            "房门",
            ["变形关不上", "合页松了", "有异响", "门把手掉了"],
            ["主卧", "次卧", "书房", "卫生间"],
        ),
        ("阳台门", ["关不严", "漏风", "锁不上"], []),
    ],
    "waterproofing": [
        ("", ["往楼下渗水", "防水层坏了", "墙角渗水"], ["卫生间", "厨房"]),
        (
            "天花板",
            ["漏雨", "渗水", "一下雨就滴水", "有水渍", "在滴水", "发霉了"],
            ["", "卫生间", "主卧", "次卧", "客厅"],
        ),
        ("外墙", ["渗水", "下雨就湿一片"], ["", "主卧", "次卧"]),
        ("窗台", ["渗水", "进水", "下雨往里灌"], ["客厅", "主卧", "次卧"]),
        ("阳台", ["渗水", "积水排不出去"], []),
    ],
    "wall_floor": [
        ("墙面", ["开裂", "起皮", "掉灰", "发霉", "鼓包"], ROOMS + ["走廊"]),
        ("地砖", ["空鼓", "裂了", "翘起来了", "松动"], ["客厅", "厨房", "卫生间", "阳台"]),
        ("木地板", ["起拱", "变形", "踩着有响声"], ["客厅", "主卧", "次卧", "书房"]),
        ("吊顶", ["掉了一块", "开裂", "往下沉"], ["厨房", "卫生间", "客厅"]),
        ("瓷砖", ["脱落", "有裂缝", "空鼓"], ["厨房", "卫生间"]),
        ("踢脚线", ["松了", "掉了"], ROOMS),
    ],
    "elevator": [("电梯", ["有异响", "门关不上"], [])],
    "public_facility": [("楼下门禁", ["刷不开", "坏了"], [])],
    "other": [
        ("晾衣架", ["坏了", "升降不了", "卡住了"], ["阳台"]),
        ("燃气灶", ["打不着火", "火很小"], ["厨房"]),
        ("可视对讲", ["没声音", "坏了", "屏幕不亮"], []),
        ("油烟机", ["不转", "声音很大", "漏油"], ["厨房"]),
        ("橱柜门", ["掉了", "合页坏了"], ["厨房"]),
        ("弱电箱", ["没信号", "网络断了"], []),
        ("门铃", ["不响", "坏了"], []),
    ],
}

#: Per category: (object, faults) of public areas (公区).
PUBLIC: dict[str, list[tuple[str, list[str]]]] = {
    "plumbing": [
        ("二次供水泵", ["噪音大", "漏水", "压力不够"]),
        ("楼道水管", ["漏水", "爆管了", "接头渗水"]),
        ("排污管", ["堵塞", "返水", "漏水"]),
        ("雨水管", ["堵了", "断了", "漏水"]),
    ],
    "electrical": [
        ("楼道灯", ["不亮", "一直亮着", "闪烁"]),
        ("声控灯", ["不亮", "不灵敏", "坏了"]),
        ("地库照明", ["一片不亮", "闪个不停"]),
        ("配电箱", ["有异响", "跳闸", "门关不上"]),
        ("路灯", ["不亮", "灯杆歪了"]),
    ],
    "hvac": [("大堂空调", ["不制冷", "漏水", "噪音大"]), ("物业中心空调", ["不制冷", "坏了"])],
    "fire_safety": [
        ("消防栓", ["漏水", "箱门坏了", "没水压"]),
        ("灭火器", ["过期了", "不见了", "压力不足"]),
        ("应急灯", ["不亮", "坏了"]),
        ("防火门", ["关不上", "闭门器坏了", "被杂物挡住"]),
        ("疏散指示灯", ["不亮", "掉了"]),
        ("楼道烟感", ["误报", "一直响"]),
    ],
    "door_window": [
        ("单元门", ["关不上", "门禁坏了", "闭门器坏了", "锁坏了"]),
        ("楼道窗户", ["玻璃破了", "关不上", "把手掉了"]),
        ("地库门", ["卡住了", "关不严"]),
    ],
    "waterproofing": [
        ("屋面", ["漏雨", "渗水"]),
        ("地下车库顶板", ["渗水", "一直滴水"]),
        ("电梯井", ["进水了", "有积水"]),
        ("楼道外墙", ["渗水", "下雨就湿"]),
    ],
    "wall_floor": [
        ("楼道墙面", ["脱落", "开裂", "有涂鸦"]),
        ("台阶", ["破损", "松动", "缺了一块"]),
        ("大堂地面", ["破损", "地砖翘起", "积水"]),
    ],
    "elevator": [
        (
            "电梯",
            [
                "困人了",
                "停运了",
                "门关不上",
                "有异响",
                "晃得厉害",
                "按钮失灵",
                "平层不准",
                "显示屏不亮",
                "运行中突然停了",
                "开关门反复",
            ],
        ),
        ("货梯", ["停运了", "门夹人", "有异响"]),
    ],
    "public_facility": [
        ("门禁系统", ["刷卡没反应", "坏了", "人脸识别不灵"]),
        ("道闸", ["抬不起来", "不识别车牌", "一直开着"]),
        ("健身器材", ["坏了", "松动了", "有安全隐患"]),
        ("儿童游乐设施", ["破损", "有尖角", "螺丝松了"]),
        ("监控", ["黑屏", "不转了"]),
        ("车库卷帘门", ["卡住了", "升不上去"]),
        ("井盖", ["松动", "一压就响", "缺了"]),
        ("快递柜", ["打不开", "屏幕坏了"]),
        ("信报箱", ["锁坏了", "门掉了"]),
    ],
    "other": [
        ("垃圾房", ["门坏了", "有异味"]),
        ("公告栏", ["玻璃碎了", "掉了"]),
        ("楼道", ["堆满杂物", "有异味"]),
        ("自行车棚", ["顶棚破了", "灯不亮"]),
    ],
}

#: Public places inside a building (prefixed by its number) and across the community.
BUILDING_PLACES = ["", "", "一单元", "二单元", "楼道", "大堂", "三楼", "顶楼", "电梯厅"]
COMMUNITY_PLACES = ["地下车库", "东门", "小区西侧", "南门口", "中心花园旁"]

OPENINGS = (
    [
        "您好，",
        "你好，",
        "物业你好，",
        "麻烦一下，",
        "打扰了，",
        "",
        "师傅好，",
        "您好物业，",
        "管家你好，",
    ],
    ["你好，", "", "物业：", "请注意：", "反映个问题：", "物业请注意，"],
    ["", "物业！", "怎么回事，", "喂，", "我说物业，", "有没有人管？"],
)
CLOSINGS = (
    [
        "麻烦安排师傅来看看，谢谢",
        "请尽快处理，谢谢",
        "麻烦师傅上门看一下",
        "辛苦了",
        "谢谢！",
        "方便的时候来修一下",
        "麻烦派人处理一下",
        "谢谢师傅",
        "麻烦了",
    ],
    [
        "请安排专业一点的师傅",
        "希望这次认真处理",
        "请准时上门，别让我等",
        "上门前请先电话联系",
        "请带好配件一次修好",
        "麻烦给个明确的上门时间",
        "请尽快回复处理时间",
    ],
    [
        "赶紧派人来！",
        "到底有没有人管？",
        "再不来我就投诉了",
        "今天必须解决！",
        "物业费白交了吗",
        "能不能快点！！",
        "别再拖了",
        "你们怎么做事的",
    ],
)
EMOJI = (
    ["", "", "🙏", "[抱拳]", "😊", ""],
    ["", "。", "", "！"],
    ["", "😡", "😤", "！！！", "[发怒]", "？？"],
)
DURATIONS = [
    "",
    "",
    "",
    "好几天了",
    "从昨天开始",
    "今天早上发现",
    "刚刚发现",
    "已经一个星期了",
    "最近一直这样",
    "这两天",
]
SEVERITY = (
    ["，不算太急", "，问题不大", "，有空的时候来看一下就行", "，有点小问题"],
    ["", "", "，影响使用", "，挺麻烦的"],
    ["，情况比较严重", "，越来越厉害了", "，根本没法用了", "，已经影响到楼下了", "，很危险"],
)
URGENCY = (
    ["", "", "", "，不着急"],
    ["，比较急", "，请尽快", "，今天能来吗"],
    ["，很急", "，非常紧急", "，请马上来人", "，十万火急", "，请立刻处理"],
)
REPEAT_CUES = [
    "，又坏了",
    "，第二次报修了",
    "，上次修完没几天又这样了",
    "，之前报过一次，还是没修好",
    "，同样的问题又出现了",
    "，这已经是第三次了",
    "，上个月刚修过",
    "，老毛病又犯了",
    "，修了跟没修一样",
    "，又来了",
]
OLD_BUILDING = ["，房子年头久了", "，楼太老了", "，老房子了", "，老小区了"]
#: Extra old-building remarks that only make sense for water problems.
OLD_PIPES = ["，老小区管道老化了", "，管子都锈了", "，防水早就不行了"]
#: Categories whose problems can reach the neighbour below / rot old pipes.
WATER_CATEGORIES = ("plumbing", "waterproofing")
#: Severity phrase that only fits water problems, and its replacement elsewhere.
WATER_ONLY_SEVERITY = ("，已经影响到楼下了", "，很影响生活")
PATROL_OPENINGS = ["巡检发现：", "巡查：", "日常巡检，", "秩序员反馈：", "保洁反馈，", ""]
PATROL_CLOSINGS = ["，请安排维修", "，需处理", "，已拍照留存", "，请工程部跟进", ""]
TYPOS = [
    ("维修", "唯修"),
    ("漏水", "露水"),
    ("师傅", "师父"),
    ("马上", "马尚"),
    ("已经", "以经"),
    ("坏了", "怀了"),
    ("厉害", "利害"),
    ("麻烦", "麻凡"),
    ("一下", "一夏"),
    ("谢谢", "xiexie"),
]

PRAISE = [
    "师傅态度很好",
    "师傅很热情",
    "师傅很耐心",
    "来得很快",
    "响应很及时",
    "上门很准时",
    "修得很好",
    "技术不错",
    "很专业",
    "一次就修好了",
    "走的时候还把地扫了",
    "解释得很清楚",
]
_ATTITUDE_PRAISE, _SPEED_PRAISE, _SKILL_PRAISE = PRAISE[:3], PRAISE[3:6], PRAISE[6:]
#: Praise that does not contradict the worst aspect (delay, attitude, repeat, cost, workmanship).
PRAISE_BESIDES = (
    _ATTITUDE_PRAISE + _SKILL_PRAISE,
    _SPEED_PRAISE + _SKILL_PRAISE,
    _ATTITUDE_PRAISE + _SPEED_PRAISE,
    PRAISE,
    _ATTITUDE_PRAISE + _SPEED_PRAISE,
)
GENERIC_GOOD = ["非常满意", "点赞", "辛苦师傅了", "谢谢物业", "好评", "满意", "服务很好"]
NEUTRAL = ["还行", "可以", "修好了", "一般吧", "凑合", "问题解决了", "没什么问题", "就那样", "嗯"]
#: Negative aspects: delay, attitude, repeat, cost, workmanship.
NEGATIVE = (
    ["来得太晚了", "等了好久", "催了好几次才来", "说好的时间没来", "拖了好几天", "响应太慢"],
    ["师傅态度很差", "师傅不耐烦", "爱答不理的", "说话很冲", "一点都不客气"],
    ["修完没几天又坏了", "根本没修好", "已经第二次了还没解决", "问题还在", "修了又坏"],
    ["收费太贵了", "乱收费", "材料费比外面贵", "收费不透明", "没说要收费"],
    ["技术不行", "弄得一地脏也不收拾", "敷衍了事", "不专业", "工具都没带齐"],
)
MILD_NEGATIVE = (
    ["来得有点晚", "等得有点久", "上门时间晚了点"],
    ["态度一般", "话不多", "不太热情"],
    ["不知道能用多久", "希望别再坏了"],
    ["价格有点贵", "收费偏高"],
    ["活干得有点糙", "收尾不太干净"],
)
ANGER = ["", "，太差了", "，很不满意", "，差评", "，要投诉", "，物业就这水平？", "！！"]
GOOD_EMOJI = ["", "", "👍", "😊", "！", "[强]"]


def _arr(items: list[str]) -> np.ndarray:
    return np.asarray(items, dtype=_S)


def _choose(rng: np.random.Generator, items: list[str], n: int) -> np.ndarray:
    """Uniform draws of fragments."""
    return _arr(items)[rng.integers(0, len(items), n)]


def _choose_by(
    rng: np.random.Generator, groups: tuple[list[str], ...], key: np.ndarray
) -> np.ndarray:
    """Draw a fragment from ``groups[key[i]]`` for every row (e.g. by tone or priority)."""
    out = np.empty(len(key), dtype=_S)
    for g, items in enumerate(groups):
        m = key == g
        if m.any():
            out[m] = _choose(rng, items, int(m.sum()))
    return out


def _flat_combos(
    table: dict[str, list[tuple[str, list[str]]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All object+fault phrases, flattened, with each category's offset and count."""
    phrases: list[str] = []
    offsets, counts = [], []
    for c in CATEGORIES:
        offsets.append(len(phrases))
        combos = [obj + fault for obj, faults in table[c] for fault in faults]
        phrases.extend(combos)
        counts.append(len(combos))
    return _arr(phrases), np.asarray(offsets), np.asarray(counts)


def _indoor_combos() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All indoor place × object × fault phrases in three word orders, flattened per category.

    "厨房水龙头漏水" / "家里厨房的水龙头漏水" / "水龙头漏水（厨房）": the word order is part of
    the phrasing, so it is enumerated with the rest (a few hundred phrases per category).
    """
    phrases: list[str] = []
    offsets, counts = [], []
    for c in CATEGORIES:
        offsets.append(len(phrases))
        combos = []
        for obj, faults, places in INDOOR[c]:
            for fault in faults:
                combos.append(obj + fault)
                for place in places:
                    if not place:
                        continue
                    combos.append(place + obj + fault)
                    combos.append(f"家里{place}的{obj}{fault}" if obj else f"家里{place}{fault}")
                    if obj:
                        combos.append(f"{obj}{fault}（{place}）")
        phrases.extend(combos)
        counts.append(len(combos))
    return _arr(phrases), np.asarray(offsets), np.asarray(counts)


def _per_category(
    rng: np.random.Generator,
    phrases: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    category: np.ndarray,
) -> np.ndarray:
    """One phrase of each row's category, by offset arithmetic (no per-row Python)."""
    idx = offsets[category] + np.floor(rng.random(len(category)) * counts[category]).astype(
        np.int64
    )
    return phrases[idx]


def _join(*parts: np.ndarray) -> np.ndarray:
    out = parts[0]
    for p in parts[1:]:
        out = np.strings.add(out, p)
    return out


def _pick(rng: np.random.Generator, cond: np.ndarray, items: list[str]) -> np.ndarray:
    """A fragment where ``cond`` holds, else the empty string."""
    out = _choose(rng, items, len(cond))
    return np.where(cond, out, _arr([""])[np.zeros(len(cond), dtype=np.int64)])


def add_typos(rng: np.random.Generator, text: np.ndarray, prob: float) -> np.ndarray:
    """Replace one homophone in a share of the texts (同音错字, as typed on phones)."""
    text = text.copy()
    hit = rng.random(len(text)) < prob
    which = rng.integers(0, len(TYPOS), len(text))
    for k, (right, wrong) in enumerate(TYPOS):
        m = hit & (which == k)
        if m.any():
            text[m] = np.strings.replace(text[m], right, wrong, 1)
    return text


def descriptions(
    rng: np.random.Generator,
    category: np.ndarray,
    public: np.ndarray,
    patrol: np.ndarray,
    priority: np.ndarray,
    tone: np.ndarray,
    severity: np.ndarray,
    repeat_cue: np.ndarray,
    old_building: np.ndarray,
    building_no: np.ndarray,
    typo_prob: float,
) -> np.ndarray:
    """Report texts for every order.

    Parameters
    ----------
    category, priority
        Codes (indices into the contract enums).
    public, patrol
        Public-area order; reported by staff on patrol (a terse, neutral style).
    tone
        0 calm, 1 picky, 2 angry: already noised by the caller, so tone is evidence of the
        resident's temperament, not a copy of it.
    severity
        Latent severity of the fault (higher → stronger wording).
    repeat_cue, old_building
        Whether to add a 又坏了-style cue / an old-building remark.
    building_no
        Building number used in public-area texts.
    typo_prob
        Share of texts with a homophone typo.
    """
    n = len(category)
    ph_in, off_in, cnt_in = _indoor_combos()
    ph_pub, off_pub, cnt_pub = _flat_combos(PUBLIC)
    indoor = _per_category(rng, ph_in, off_in, cnt_in, category)
    obj_fault = _per_category(rng, ph_pub, off_pub, cnt_pub, category)
    bno = np.strings.add(np.asarray(building_no).astype(_S), "号楼")
    in_building = rng.random(n) < 0.8
    place_pub = np.where(
        in_building,
        np.strings.add(bno, _choose(rng, BUILDING_PLACES, n)),
        _choose(rng, COMMUNITY_PLACES, n),
    )
    pub_text = np.strings.add(place_pub, obj_fault)
    body = np.where(public, pub_text, indoor)

    sev_level = np.digitize(severity, [-0.8, 0.9])
    sev_level = np.where((sev_level == 0) & (priority > 0), 1, sev_level)  # no "不急" when urgent
    opening = _choose_by(rng, OPENINGS, tone)
    closing = _choose_by(rng, CLOSINGS, tone)
    emoji = _choose_by(rng, EMOJI, tone)
    duration = _choose(rng, DURATIONS, n)
    duration = np.where(np.strings.str_len(duration) > 0, np.strings.add("，", duration), duration)
    water = np.isin(category, [CATEGORIES.index(c) for c in WATER_CATEGORIES])
    sev = _choose_by(rng, SEVERITY, sev_level)
    sev = np.where(~water & (sev == WATER_ONLY_SEVERITY[0]), WATER_ONLY_SEVERITY[1], sev)
    urg = _choose_by(rng, URGENCY, priority)
    # one "not urgent" remark is enough; "请尽快" once is enough
    urg = np.where(
        (sev_level == 0) | (np.strings.find(closing, "尽快") >= 0),
        np.where(priority > 0, urg, ""),
        urg,
    )
    cue = _pick(rng, repeat_cue, REPEAT_CUES)
    old_remark = np.where(
        water & (rng.random(n) < 0.5), _choose(rng, OLD_PIPES, n), _choose(rng, OLD_BUILDING, n)
    )
    old = np.where(old_building & (rng.random(n) < 0.25), old_remark, "")
    # repeat cues go first in half the texts: "又坏了！厨房水龙头漏水…"
    cue_first = rng.random(n) < 0.4
    cue_first &= np.strings.str_len(cue) > 0
    lead = np.where(cue_first, np.strings.add(np.strings.lstrip(cue, "，"), "，"), "")
    cue = np.where(cue_first, "", cue)
    resident_text = _join(
        opening,
        lead,
        body,
        duration,
        cue,
        sev,
        old,
        urg,
        np.where(np.strings.str_len(closing) > 0, "，", ""),
        closing,
        emoji,
    )
    patrol_text = _join(_choose(rng, PATROL_OPENINGS, n), body, _choose(rng, PATROL_CLOSINGS, n))
    text = np.where(patrol, patrol_text, resident_text)
    return add_typos(rng, text, typo_prob)


def comments(
    rng: np.random.Generator,
    dissatisfied: np.ndarray,
    rating: np.ndarray,
    delay_factor: np.ndarray,
    attitude: np.ndarray,
    repeat: np.ndarray,
    cost: np.ndarray,
    skill: np.ndarray,
    tone: np.ndarray,
    typo_prob: float,
    off_tone: float = 0.0,
) -> np.ndarray:
    """Follow-up comments, shaped by what actually went wrong (or right).

    Dissatisfied residents name the worst aspect of the job; satisfied ones praise it, stay
    neutral, or praise with a reservation (师傅态度挺好就是来得太晚了) when something was off.
    ``rating`` is 0 where the resident gave none.
    """
    n = len(rating)
    # how bad each aspect was: delay, attitude, repeat, cost, workmanship
    badness = np.column_stack(
        [
            np.log1p(np.maximum(0.0, delay_factor - 1.0)) * 1.5,
            np.maximum(0.0, -attitude),
            repeat * 2.0,
            np.log1p(cost / 80.0),
            np.maximum(0.0, -skill) * 0.8,
        ]
    ) + rng.gumbel(0.0, 0.35, (n, 5))
    worst = np.argmax(badness, axis=1)
    worst_level = badness[np.arange(n), worst]
    neg = _choose_by(rng, NEGATIVE, worst)
    mild = _choose_by(rng, MILD_NEGATIVE, worst)
    praise = _choose(rng, PRAISE, n)
    praise2 = _choose(rng, PRAISE + GENERIC_GOOD, n)
    second_neg = _choose(rng, [x for g in NEGATIVE for x in g], n)

    negative = _join(
        neg,
        np.where(
            (rng.random(n) < 0.35) & (second_neg != neg), np.strings.add("，", second_neg), ""
        ),
        _choose(rng, ANGER, n),
    )
    positive = _join(
        praise,
        np.where(rng.random(n) < 0.5, np.strings.add("，", praise2), ""),
        _choose(rng, GOOD_EMOJI, n),
    )
    other_praise = _choose_by(rng, PRAISE_BESIDES, worst)
    mixed_a = _join(other_praise, "，就是", mild)
    mixed_b = _join(mild, "，不过", other_praise)
    mixed = np.where(rng.random(n) < 0.6, mixed_a, mixed_b)
    neutral = _choose(rng, NEUTRAL, n)
    # a dissatisfied resident whose technician was pleasant still says so (mixed, but negative)
    angry_mixed = _join(other_praise, "，但是", neg)

    issue = worst_level > 1.2
    p_mixed = np.where(rating == 5, 0.4, 0.8)
    out = np.where(
        dissatisfied,
        np.where((attitude > 0.8) & (rng.random(n) < 0.4), angry_mixed, negative),
        np.where(
            issue & (rng.random(n) < p_mixed),
            mixed,
            np.where((rating == 5) | ((rating == 0) & (rng.random(n) < 0.6)), positive, neutral),
        ),
    )
    out = np.where((tone == 2) & dissatisfied, np.strings.add(out, "！"), out)
    # words that do not match the verdict: politeness or indifference from the unhappy,
    # a complaint from the satisfied who still rate well (``off_tone``, split in three)
    u = rng.random(n)
    polite = _choose(rng, GENERIC_GOOD, n)
    out = np.where(dissatisfied & (u < off_tone / 3), neutral, out)
    out = np.where(dissatisfied & (u >= off_tone / 3) & (u < 2 * off_tone / 3), polite, out)
    out = np.where(~dissatisfied & (u < off_tone / 3), negative, out)
    return add_typos(rng, out, typo_prob)
