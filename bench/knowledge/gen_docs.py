#!/usr/bin/env python3
"""Deterministic test documents for bench/knowledge.sh (stdlib only).

  gen_docs.py vocab OUT [--size N]               N words, one a line: ~1,000 common
                                                 English words first, then made-up
                                                 syllable words
  gen_docs.py text OUT --vocab V --bytes B       UTF-8 prose of about B bytes: paragraphs
                                                 of sentences, a heading now and then
  gen_docs.py pdf OUT --vocab V --pages P        a PDF of P pages of that prose, written
                                                 by hand (PDF 1.4, Helvetica, one
                                                 Flate-compressed content stream a page)
  gen_docs.py sentences OUT --vocab V --count N  N sentences, one a line, for the SQL seed
  gen_docs.py queries OUT --vocab V --count N    N search questions of 3-5 words

Words are drawn with Zipf-like frequencies (rank^-1), as in natural text, so full-text
search sees frequent and rare terms alike. The most frequent ranks are real English words
(the usual list of the ~1,000 most common ones, in about that order), the long tail
made-up ones: the text comes to ~3.2 bytes per cl100k token (made-up words alone give
~2.4, English prose ~4), and tokens per byte decide how many chunks a file makes — so
about 1.3x the chunks of as many bytes of English. Nothing depends on the machine's
files: the same arguments give the same bytes everywhere.
"""
import argparse
import bisect
import itertools
import random
import zlib

SEED = 20261206


def load_vocab(path):
    with open(path, encoding="utf-8") as f:
        return [w.strip() for w in f if w.strip()]


# The ~1,000 most common English words, roughly most frequent first.
COMMON = """
the of and to a in is it you that he was for on are with as his they be at one have this
from or had by not word but what some we can out other were all there when up use your
how said an each she which do their time if will way about many then them write would
like so these her long make thing see him two has look more day could go come did number
sound no most people my over know water than call first who may down side been now find
any new work part take get place made live where after back little only round man year
came show every good me give our under name very through just form sentence great think
say help low line differ turn cause much mean before move right boy old too same tell
does set three want air well also play small end put home read hand port large spell add
even land here must big high such follow act why ask men change went light kind off need
house picture try us again animal point mother world near build self earth father head
stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard
start might story saw far sea draw left late run while press close night real life few
north open seem together next white children begin got walk example ease paper group
always music those both mark often letter until mile river car feet care second book
carry took science eat room friend began idea fish mountain stop once base hear horse
cut sure watch color face wood main enough plain girl usual young ready above ever red
list though feel talk bird soon body dog family direct pose leave song measure door
product black short numeral class wind question happen complete ship area half rock
order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast
verb sing listen six table travel less morning ten simple several vowel toward war lay
against pattern slow center love person money serve appear road map rain rule govern
pull cold notice voice unit power town fine certain fly fall lead cry dark machine note
wait plan figure star box noun field rest correct able pound done beauty drive stood
contain front teach week final gave green quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay
wheel full force blue object decide surface deep moon island foot system busy test
record boat common gold possible plane stead dry wonder laugh thousand ago ran check
game shape equate miss brought heat snow tire bring distant fill east paint language
among grand ball yet wave drop heart present heavy dance engine position arm wide sail
material size vary settle speak weight general ice matter circle pair include divide
syllable felt perhaps pick sudden count square reason length represent art subject
region energy hunt probable bed brother egg ride cell believe fraction forest sit race
window store summer train sleep prove lone exercise wall catch mount wish sky board joy
winter sat written wild instrument kept glass grass cow job edge sign visit past soft
fun bright gas weather month million bear finish happy hope flower clothe strange gone
jump baby eight village meet root buy raise solve metal whether push seven paragraph
third shall held hair describe cook floor either result burn hill safe cat century
consider type law bit coast copy phrase silent tall sand soil roll temperature finger
industry value fight lie beat excite natural view sense ear else quite broke case middle
kill son lake moment scale loud spring observe child straight consonant nation
dictionary milk speed method organ pay age section dress cloud surprise quiet stone tiny
climb cool design poor lot experiment bottom key iron single stick flat twenty skin
smile crease hole trade melody trip office receive row mouth exact symbol die least
trouble shout except wrote seed tone join suggest clean break lady yard rise bad blow
oil blood touch grew cent mix team wire cost lost brown wear garden equal sent choose
fell fit flow fair bank collect save control decimal gentle woman captain practice
separate difficult doctor please protect noon whose locate ring character insect caught
period indicate radio spoke atom human history effect electric expect crop modern
element hit student corner party supply bone rail imagine provide agree thus capital
chair danger fruit rich thick soldier process operate guess necessary sharp wing create
neighbor wash bat rather crowd corn compare poem string bell depend meat rub tube famous
dollar stream fear sight thin triangle planet hurry chief colony clock mine tie enter
major fresh search send yellow gun allow print dead spot desert suit current lift rose
continue block chart hat sell success company subtract event particular deal swim term
opposite wife shoe shoulder spread arrange camp invent cotton born determine quart nine
truck noise level chance gather shop stretch throw shine property column molecule select
wrong gray repeat require broad prepare salt nose plural anger claim continent oxygen
sugar death pretty skill women season solution magnet silver thank branch match suffix
especially fig afraid huge sister steel discuss forward similar guide experience score
apple bought led pitch coat mass card band rope slip win dream evening condition feed
tool total basic smell valley nor double seat arrive master track parent shore division
sheet substance favor connect post spend chord fat glad original share station dad bread
charge proper bar offer segment slave duck instant market degree populate chick dear
enemy reply drink occur support speech nature range steam motion path liquid log meant
quotient teeth shell neck
""".split()


def make_vocab(size):
    words = list(dict.fromkeys(COMMON))[:size]
    # The long tail: pronounceable made-up words.
    rng = random.Random(SEED + 1)
    cons, vow = "bcdfghjklmnprstvwz", "aeiou"
    have = set(words)
    while len(words) < size:
        w = "".join(rng.choice(cons) + rng.choice(vow) for _ in range(rng.randint(2, 4)))
        if rng.random() < 0.4:
            w += rng.choice(cons)
        if w not in have:
            have.add(w)
            words.append(w)
    return words


class Prose:
    def __init__(self, vocab, seed=SEED):
        self.vocab = vocab
        self.rng = random.Random(seed)
        self.cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(vocab))))

    def word(self):
        x = self.rng.random() * self.cum[-1]
        return self.vocab[bisect.bisect_left(self.cum, x)]

    def sentence(self, lo=6, hi=18):
        n = self.rng.randint(lo, hi)
        ws = [self.word() for _ in range(n)]
        ws[0] = ws[0].capitalize()
        if n > 8 and self.rng.random() < 0.5:
            ws[self.rng.randint(2, n - 3)] += ","
        return " ".join(ws) + self.rng.choice(".....?!")

    def paragraph(self):
        return " ".join(self.sentence() for _ in range(self.rng.randint(3, 9)))

    def heading(self):
        return " ".join(self.word() for _ in range(self.rng.randint(2, 5))).title()


def cmd_vocab(a):
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(make_vocab(a.size)) + "\n")


def cmd_text(a):
    p = Prose(load_vocab(a.vocab))
    out, size, section = [], 0, 0
    while size < a.bytes:
        if size == 0 or p.rng.random() < 0.08:
            section += 1
            block = "%d. %s" % (section, p.heading())
        else:
            block = p.paragraph()
        out.append(block)
        size += len(block.encode()) + 2
    data = "\n\n".join(out) + "\n"
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(data)


def pdf_escape(s):
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def wrap(text, width):
    line, lines = "", []
    for w in text.split():
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = w if not line else line + " " + w
    if line:
        lines.append(line)
    return lines


def cmd_pdf(a):
    p = Prose(load_vocab(a.vocab))
    lines_per_page, width = 48, 95
    pages = []
    for n in range(a.pages):
        lines = ["Page %d - %s" % (n + 1, p.heading()), ""]
        while len(lines) < lines_per_page:
            lines += wrap(p.paragraph(), width) + [""]
        pages.append(lines[:lines_per_page])

    objects = {}  # number -> bytes
    # 1 catalog, 2 pages tree, 3 font, then per page: page object and its content stream.
    kids = []
    for i, lines in enumerate(pages):
        page_no, content_no = 4 + 2 * i, 5 + 2 * i
        kids.append(page_no)
        ops = ["BT", "/F1 10 Tf", "12 TL", "50 800 Td"]
        for line in lines:
            ops.append("(%s) Tj T*" % pdf_escape(line))
        ops.append("ET")
        stream = zlib.compress("\n".join(ops).encode("latin-1"), 6)
        objects[content_no] = (b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream)
                               + stream + b"\nendstream")
        objects[page_no] = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content_no)
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = (b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids)
                  + b"] /Count %d >>" % len(kids))
    objects[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for no in sorted(objects):
        offsets[no] = len(out)
        out += b"%d 0 obj\n" % no + objects[no] + b"\nendobj\n"
    xref = len(out)
    count = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % count
    for no in range(1, count):
        out += b"%010d 00000 n \n" % offsets[no]
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (count, xref)
    with open(a.out, "wb") as f:
        f.write(out)


def cmd_sentences(a):
    p = Prose(load_vocab(a.vocab), SEED + 2)
    with open(a.out, "w", encoding="utf-8") as f:
        for _ in range(a.count):
            f.write(p.sentence(8, 16) + "\n")


def cmd_queries(a):
    # Questions of mid-frequency words (ranks 50-2000): neither stop-word-like nor unseen.
    vocab = load_vocab(a.vocab)
    rng = random.Random(SEED + 3)
    hi = min(len(vocab), 2000)
    with open(a.out, "w", encoding="utf-8") as f:
        for _ in range(a.count):
            f.write(" ".join(vocab[rng.randint(50, hi - 1)] for _ in range(rng.randint(3, 5))) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("vocab"); s.add_argument("out"); s.add_argument("--size", type=int, default=5000)
    s = sub.add_parser("text"); s.add_argument("out"); s.add_argument("--vocab", required=True)
    s.add_argument("--bytes", type=int, default=2_000_000)
    s = sub.add_parser("pdf"); s.add_argument("out"); s.add_argument("--vocab", required=True)
    s.add_argument("--pages", type=int, default=100)
    s = sub.add_parser("sentences"); s.add_argument("out"); s.add_argument("--vocab", required=True)
    s.add_argument("--count", type=int, default=50_000)
    s = sub.add_parser("queries"); s.add_argument("out"); s.add_argument("--vocab", required=True)
    s.add_argument("--count", type=int, default=200)
    a = ap.parse_args()
    globals()["cmd_" + a.cmd](a)


if __name__ == "__main__":
    main()
