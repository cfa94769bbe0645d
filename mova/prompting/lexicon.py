"""Word tables for the offline writer: sound cues, speakers, scenes, time markers, shot and style words.

Every table is a tuple of (regex, phrase) or (regex, phrase, category) rows, matched case-insensitively;
English rows use word boundaries, Chinese rows match substrings. Keep rows short and unambiguous: a cue that
fires on a visual word in the wrong sense ("she waves") puts an invented sound into the audio paragraph.
"""

from __future__ import annotations

import re

# --- sound cues: (pattern, phrase, category) with category in {"effect", "music"} ---------------------------
SOUND_CUES: tuple[tuple[str, str, str], ...] = (
    (
        r"\brain(?:s|ing|drops?|fall|storm)?\b|\bdownpour\b|\bdrizzl\w*|下雨|雨声|雨滴|大雨|小雨|雨点",
        "rain pattering",
        "effect",
    ),
    (r"\bthunder\w*|雷声|打雷|雷鸣", "thunder rumbling", "effect"),
    (r"\bwind\b|\bwindy\b|\bgusts?\b|\bbreeze\b|\bhowling\b|风声|大风|微风|狂风", "wind blowing", "effect"),
    (
        r"\b(?:ocean|sea) waves?\b|\bwaves? (?:crash|break|roll|lap)\w*|\bsurf\b|海浪|浪花|涛声",
        "waves breaking",
        "effect",
    ),
    (r"\bfootsteps?\b|脚步", "footsteps", "effect"),
    (r"\bdogs? bark\w*|\bbark(?:s|ing|ed)\b|\bwoof\b|狗叫|犬吠|汪汪", "a dog barking", "effect"),
    (r"\bmeow\w*|\bpurr(?:s|ing)?\b|猫叫|喵", "a cat meowing", "effect"),
    (r"\bchirp\w*|\bbirdsong\b|\bbirds? sing\w*|\btweet(?:s|ing)\b|鸟鸣|鸟叫", "birds chirping", "effect"),
    (r"\bknock(?:s|ing|ed)?\b|敲门", "knocking", "effect"),
    (r"\bslam(?:s|med|ming)?\b|摔门", "a door slamming", "effect"),
    (r"\bcreak\w*|吱呀", "creaking", "effect"),
    (r"\bexplo(?:de|des|ded|sion|sions)\b|\bblasts?\b|爆炸", "an explosion", "effect"),
    (r"\bgunshots?\b|\bgunfire\b|枪声|开枪", "gunshots", "effect"),
    (r"\bapplau\w*|\bclapp\w*|\bclaps\b|掌声|鼓掌", "applause", "effect"),
    (r"\blaugh\w*|\bgiggl\w*|\bchuckl\w*|笑声|大笑|哈哈", "laughter", "effect"),
    (r"\bsob(?:s|bing)?\b|\bweep(?:s|ing)?\b|哭泣|哭声|大哭", "crying", "effect"),
    (r"\bscream\w*|\bshriek\w*|尖叫", "screaming", "effect"),
    (r"\bcheer(?:s|ing|ed)?\b|欢呼", "cheering", "effect"),
    (r"\bcrowds?\b|人群|人声鼎沸", "a crowd murmuring", "effect"),
    (r"\bengines?\b|\brevs?\b|\brevving\b|引擎|发动机|轰鸣", "an engine running", "effect"),
    (r"\bhonk\w*|\bcar horns?\b|喇叭", "car horns honking", "effect"),
    (
        r"\b(?:war|hunting|fog|train|air|ship'?s?) ?horns?\b|\bhorns? (?:blare|blast|sound|echo)\w*|号角",
        "a horn sounding",
        "effect",
    ),
    (r"\bsirens?\b|警笛|警报", "a siren wailing", "effect"),
    (r"\btrains?\b|火车|列车", "a train rumbling past", "effect"),
    (r"\bhelicopters?\b|直升机", "helicopter rotors", "effect"),
    (r"\bjets?\b|\bairplanes?\b|\baircraft\b|飞机", "a jet engine roaring", "effect"),
    (r"\bbells?\b|\bchimes?\b|\bchiming\b|钟声|铃声", "bells ringing", "effect"),
    (r"\bphones? ring\w*|\bringtone\b|电话铃", "a phone ringing", "effect"),
    (r"\bshatter\w*|玻璃碎|打碎", "glass shattering", "effect"),
    (r"\bsplash\w*|水花", "water splashing", "effect"),
    (r"\bcrackl\w*|\bbonfire\b|\bfireplace\b|\bcampfire\b|篝火|壁炉|噼啪", "fire crackling", "effect"),
    (r"\bsizzl\w*|\bfrying\b|滋滋", "food sizzling in a pan", "effect"),
    (r"\btyping\b|\bkeyboard\b|键盘", "keyboard typing", "effect"),
    (r"\bbang(?:s|ing|ed)?\b|\bthud\w*|\bcrash(?:es|ing|ed)?\b|砰", "a loud crash", "effect"),
    (r"\bwhoosh\w*|\bswoosh\w*|呼啸", "a whoosh", "effect"),
    (r"\bbuzz\w*|嗡嗡", "buzzing", "effect"),
    (r"\bhiss\w*|嘶嘶", "hissing", "effect"),
    (r"\bbeep\w*|哔", "beeping", "effect"),
    (r"\broar\w*|\bgrowl\w*|咆哮|吼叫", "a deep roar", "effect"),
    (r"\bticking\b|\bticks?\b|滴答", "a clock ticking", "effect"),
    (r"\bwaterfalls?\b|\bstreams?\b|\bcreeks?\b|\bbrooks?\b|瀑布|溪水|流水", "running water", "effect"),
    (r"\bgallop\w*|\bhooves\b|马蹄", "hooves galloping", "effect"),
    (r"\bfireworks?\b|烟花|鞭炮", "fireworks popping", "effect"),
    (r"\bwhistl\w*|口哨", "whistling", "effect"),
    (r"\bheartbeats?\b|心跳", "a heartbeat", "effect"),
    (r"\bsnor\w*|打呼", "snoring", "effect"),
    # music: instruments first, generic words last (the generic phrase is used only when nothing else matched)
    (r"\bpian(?:o|os|ist|ists)\b|钢琴", "piano", "music"),
    (r"\bguitar(?:s|ist|ists)?\b|吉他", "guitar", "music"),
    (r"\bviolin(?:s|ist|ists)?\b|小提琴", "violin", "music"),
    (r"\bcell(?:o|os|ist|ists)\b|大提琴", "cello", "music"),
    (r"\bdrums?\b|\bdrumm(?:ing|er|ers)\b|鼓声|打鼓", "drum", "music"),
    (r"\bsaxophon(?:e|es|ist|ists)\b|\bsax\b|萨克斯", "saxophone", "music"),
    (r"\btrumpet(?:s|er|ers)?\b|小号", "trumpet", "music"),
    (r"\bflut(?:e|es|ist|ists)\b|\bflautists?\b|长笛|笛子", "flute", "music"),
    (r"\bharp(?:s|ist|ists)?\b|竖琴", "harp", "music"),
    (r"\borchestra\w*|\bsymphon\w*|交响", "orchestral", "music"),
    (r"\bchoir\b|合唱", "choral", "music"),
    (r"\bsynth\w*|\belectronic music\b|\btechno\b|电子音乐", "electronic", "music"),
    (r"\bjazz\b|爵士", "jazz", "music"),
    (r"\bsing(?:s|ing)?\b|\bsang\b|\bsongs?\b|唱歌|歌声|演唱", "singing", "music"),
    (r"\bmusic\w*|\bmelod\w*|\btunes?\b|\bconcert\b|音乐|旋律|乐曲", "music", "music"),
)

# negation within a few words before a cue turns it off ("no music", "without any rain")
NEGATION_BEFORE = re.compile(r"(?:\b(?:no|not|without|never|zero)\b(?:\W+\w+){0,2}\W*|(?:没有|无|不|别)\s*)$", re.I)
SILENCE = re.compile(r"\b(?:silent|silently|silence|no sound|no audio|mute[sd]?|soundless)\b|无声|安静无声|寂静", re.I)

# --- speech ---------------------------------------------------------------------------------------------------
SPEECH_VERBS = re.compile(
    r"\b(?:say|says|said|saying|speak|speaks|speaking|spoke|talk|talks|talking|tell|tells|told|ask|asks|asked|"
    r"repl(?:y|ies|ied)|whisper\w*|shout\w*|yell\w*|exclaim\w*|mutter\w*|narrat\w+|voice-?over|conversation|"
    r"chat(?:s|ting)?|argu\w+|interview\w*|announc\w+|calls? out)\b|说|讲|问|喊|回答|对话|聊天|旁白|低语",
    re.I,
)
# (pattern, speaker phrase) — order matters: "old man" before "man"
SPEAKERS: tuple[tuple[str, str], ...] = (
    (r"\bold (?:man|men)\b|\belderly man\b|\bgrandfather\b|\bgrandpa\b|老爷爷|老大爷|爷爷|老头", "an old man"),
    (r"\bold (?:woman|women|lady)\b|\belderly woman\b|\bgrandmother\b|\bgrandma\b|老奶奶|奶奶|老太太", "an old woman"),
    (r"\bgirls?\b|女孩|小姑娘", "a girl"),
    (r"\bboys?\b|男孩|小伙子", "a boy"),
    (r"\bchild\b|\bchildren\b|\bkids?\b|孩子|小孩", "a child"),
    (r"\bdaughter\b|女儿", "a girl"),
    (r"\bson\b|儿子", "a boy"),
    (r"\bwoman\b|\bwomen\b|\blady\b|\bmother\b|\bmom\b|女人|女子|女士|妈妈|母亲", "a woman"),
    (r"\bman\b|\bmen\b|\bguy\b|\bfather\b|\bdad\b|男人|男子|先生|爸爸|父亲", "a man"),
    (r"\bnarrator\b|旁白", "a narrator"),
    (r"\brobots?\b|机器人", "a robot"),
    (r"\bteacher\b|老师", "a teacher"),
    (r"\bsoldiers?\b|士兵", "a soldier"),
    (r"\bold (?:person|people)\b|\belderly\b|老人", "an elderly person"),
)

# the subject of a speech verb: "the barista asks", "Anna says", "Ben shakes his head and replies", "Anna: "
SPEECH_VERB_WORDS = (
    r"(?:says|said|asks|asked|repl(?:ies|ied)|answers|answered|shouts|shouted|whispers|whispered|yells|yelled|"
    r"calls out|called out|tells|told|sighs|exclaims|exclaimed|mutters|muttered|murmurs|murmured|responds|"
    r"responded|adds|added|announces|announced|cries|cried|screams|screamed|laughs|laughed)"
)
_NOUN_WORD = r"(?!(?:and|or|but|then|to|with|over|at|in|on|of|from|into|who|that|as)\b)[a-z-]+"
SUBJECT_BEFORE_SPEECH = re.compile(
    rf"(?:\b(?:[Aa]n?|[Tt]he|[Hh]is|[Hh]er|[Tt]heir)\s+((?:{_NOUN_WORD}\s+)?{_NOUN_WORD})|\b([Hh]e|[Ss]he)|\b([A-Z][a-z]+))"
    rf"\s+(?:[a-z]+ly\s+)?{SPEECH_VERB_WORDS}\b"
)
ARTICLE_CLAUSE_SPEECH = re.compile(
    rf"(?:^|[.!?]\s+)(?:A|An|The)\s+((?:{_NOUN_WORD}\s+)?{_NOUN_WORD})\b[^.!?,;:]*?\b{SPEECH_VERB_WORDS}\b"
)
NAME_CLAUSE_SPEECH = re.compile(rf"(?:^|[.!?]\s+)([A-Z][a-z]+)\b[^.!?,;:]*?\b{SPEECH_VERB_WORDS}\b")
NAME_COLON = re.compile(r"(?:^|[.!?]\s+|\s)([A-Z][a-z]+)\s*:\s")
NOT_NAMES = frozenset(
    "The A An He She They It In On At Then Finally First After Before When While As Suddenly Later Meanwhile Next "
    "This That There Here His Her Their We You I One Two Three And But So Audio Sound Music Sfx Now Soon Outside "
    "Inside Behind Above Below Everyone Someone Nobody".split()
)

# used only when no noun above names a speaker
PRONOUN_SPEAKERS: tuple[tuple[str, str], ...] = (
    (r"\bshe\b|她", "a woman"),
    (r"\bhe\b|(?<!其)他", "a man"),
)

# --- scenes for ambience when nothing in the prompt makes a sound -------------------------------------------
SCENES: tuple[tuple[str, str], ...] = (
    (r"\bforests?\b|\bwoods\b|\bjungle\b|森林|树林|丛林", "a forest"),
    (r"\bbeach\w*|\bshore\w*|\bocean\b|\bsea\b|\bcoast\w*|海边|海滩|大海", "the seaside"),
    (r"\bcity\b|\bstreets?\b|\bdowntown\b|\bavenue\b|\btraffic\b|城市|街道|街头|马路", "a city street"),
    (r"\bkitchen\b|厨房", "a kitchen"),
    (r"\boffice\b|办公室", "an office"),
    (r"\bcaf[eé]s?\b|\bcoffee shop\b|\brestaurant\b|\bbar\b|\bdiner\b|咖啡馆|餐厅|酒吧", "a café"),
    (r"\bclassroom\b|\bschool\b|教室|学校", "a classroom"),
    (r"\blibrary\b|图书馆", "a library"),
    (r"\bmarket\w*|\bbazaar\b|市场|集市", "a busy market"),
    (r"\bpark\b|公园", "a park"),
    (r"\bmeadow\w*|\bfields?\b|\bcountryside\b|\bfarm\w*|田野|草地|乡村|农场", "open countryside"),
    (r"\bmountain\w*|\bcliff\w*|\bpeak\b|山顶|山峰|高山", "a mountainside"),
    (r"\bdesert\b|沙漠", "a desert"),
    (r"\bsnow\w*|\bwinter\b|雪", "a snowy landscape"),
    (r"\blake\b|\briver\w*|\bpond\b|湖|河", "a lakeside"),
    (r"\bunderwater\b|水下|海底", "an underwater scene"),
    (r"\bspaceship\b|\bspacecraft\b|\bcockpit\b|飞船", "a spacecraft interior"),
    (r"\bchurch\b|\bcathedral\b|\btemple\b|教堂|寺庙", "a large stone hall"),
    (
        r"\broom\b|\bbedroom\b|\bliving room\b|\bapartment\b|\bhouse\b|\bhome\b|\bindoors\b|房间|卧室|客厅|家里",
        "a quiet room",
    ),
)

# --- time markers for ordering events -----------------------------------------------------------------------
FIRST_MARKERS = re.compile(
    r"^(?:first(?:ly)?|at first|to begin(?: with)?|initially|in the beginning|at the (?:beginning|start)|"
    r"the video (?:starts|begins|opens))\b|^(?:首先|一开始|起初|开始时|开头)",
    re.I,
)
LAST_MARKERS = re.compile(
    r"^(?:finally|lastly|at the end|in the end|ultimately|the video ends)\b|^(?:最后|最终|结尾|结束时)", re.I
)
BEFORE_MARKERS = re.compile(r"^(?:before that|earlier|just before)\b|^(?:在此之前|之前)", re.I)

# --- explicit audio sentences ("Audio: ...", "Music: ...") ---------------------------------------------------
AUDIO_LABEL = re.compile(
    r"^(?:audio|sound|sounds|sfx|sound effects?|music|background music|soundtrack|ambience|ambient sound)\s*[:：]\s*"
    r"|^(?:音效|声音|背景音乐|音乐|配乐|环境音)\s*[:：]\s*",
    re.I,
)

# --- first-frame (no image) prompt words ---------------------------------------------------------------------
SHOT_SIZES: tuple[tuple[str, str], ...] = (
    (r"\bextreme close[- ]?up\b|大特写", "Extreme close-up shot"),
    (r"\bclose[- ]?up\b|\bcloseup\b|特写", "Close-up shot"),
    (r"\bmedium close[- ]?up\b|近景", "Medium close-up shot"),
    (r"\bmedium shot\b|\bmid[- ]shot\b|中景", "Medium shot"),
    (r"\bfull[- ]body\b|\bfull shot\b|全身", "Full shot"),
    (r"\bwide shot\b|\bwide[- ]angle\b|\bestablishing shot\b|\bpanoram\w*|\blandscape\b|远景|全景", "Wide shot"),
    (r"\baerial\b|\bdrone\b|航拍", "Aerial wide shot"),
)
CAMERA_ANGLES: tuple[tuple[str, str], ...] = (
    (r"\blow[- ]angle\b|\bfrom below\b|仰拍|仰视", "low-angle camera looking up"),
    (r"\bhigh[- ]angle\b|\bfrom above\b|俯拍|俯视", "high-angle camera looking down"),
    (r"\bbird'?s[- ]eye\b|\btop[- ]down\b|\boverhead\b|\baerial\b|\bdrone\b|鸟瞰|航拍", "overhead bird's-eye view"),
    (r"\bover[- ]the[- ]shoulder\b|过肩", "over-the-shoulder camera position"),
    (r"\bdutch angle\b|\btilted\b|倾斜", "tilted Dutch angle"),
)
STYLES: tuple[tuple[str, str], ...] = (
    (
        r"\banime\b|\bmanga\b|动漫|二次元",
        "Japanese anime style with clean line art, cel shading and expressive character design",
    ),
    (
        r"\bcartoon\b|\bpixar\b|\b3d animat\w*|卡通",
        "Polished 3D animated film style with soft global illumination and stylised proportions",
    ),
    (
        r"\bwatercolou?r\b|水彩",
        "Watercolour painting style with soft washes, visible paper grain and gentle colour bleeding",
    ),
    (r"\boil painting\b|油画", "Classical oil painting style with rich impasto brushwork and deep, layered colour"),
    (r"\bpixel art\b|像素", "Detailed pixel art style with a limited palette and crisp square pixels"),
    (
        r"\bclaymation\b|\bstop[- ]motion\b|黏土",
        "Handmade claymation style with tactile clay textures and miniature set lighting",
    ),
    (
        r"\bcomic\b|\bgraphic novel\b|漫画",
        "Graphic novel style with bold ink outlines and flat, saturated colour fills",
    ),
    (
        r"\bnoir\b|\bblack[- ]and[- ]white\b|黑白",
        "Black-and-white film noir style with hard light, deep shadows and fine film grain",
    ),
    (
        r"\bcyberpunk\b|\bneon\b|赛博朋克|霓虹",
        "Cinematic cyberpunk style with saturated neon light, reflective wet surfaces and haze",
    ),
    (
        r"\bvintage\b|\bretro\b|\b1970s\b|\b1980s\b|复古",
        "Vintage film photograph style with warm faded colours and soft analogue grain",
    ),
    (r"\bdocumentary\b|纪录片", "Naturalistic documentary photography style with available light and unposed framing"),
)
DEFAULT_STYLE = (
    "Photorealistic cinematic still with natural lighting, realistic textures and a shallow, filmic depth of field"
)
PERSON_WORDS = re.compile(
    r"\b(?:man|men|woman|women|girl|boy|child|children|kid|person|people|lady|guy|he|she|they|soldier|teacher|chef|"
    r"dancer|singer|musician|worker|student|couple|family|friends?)\b|人|他|她|男|女|孩",
    re.I,
)
