"""Our own small CLIP tokenizer files: a word list and byte-level BPE merges learned from it.

No tokenizer is downloaded: ``tokenizer_files(words)`` returns a vocabulary and merges in CLIP's
format in which each of ``words`` is one token and anything else falls back to single bytes (never
unknown). ``LIBRARY_WORDS`` covers the built-in template library, so its prompts count tokens the way
a real CLIP tokenizer would; the shapes model uses its own grammar's words.
"""

from __future__ import annotations

from collections import Counter, defaultdict

__all__ = ["LIBRARY_WORDS", "tokenizer_files"]

# Words the tokenizer knows whole; anything else falls back to single bytes (never unknown).
LIBRARY_WORDS = """
a an the of and with in on at by for from to under over near behind beside above below into
photo photograph portrait close-up closeup shot image picture render illustration painting drawing sketch
diagram chart flowchart architecture map poster icon logo concept art product studio seamless background
white black red green blue yellow orange purple pink brown gray grey gold silver cyan magenta
light dark bright soft hard warm cool golden hour sunset sunrise night day morning evening overcast
lighting lit rim backlit dramatic cinematic volumetric natural ambient neon
large small big tiny huge left right center centre top bottom middle corner
circle square triangle star cube sphere shape shapes line lines arrow arrows box boxes label labels text
cat dog bird horse person man woman child car bottle chair lamp watch shoe cup mug phone camera
lighthouse mountain mountains river lake sea ocean forest tree trees city street house castle cliff
sky cloud clouds sun moon rain snow fog mist water fire stone wood metal glass leather ceramic
highly detailed detail sharp focus bokeh depth field lens mm 35mm 50mm 85mm wide angle macro telephoto
realistic photorealistic hyperrealistic 8k 4k hdr professional quality best masterpiece award winning
blurry blur lowres low worst jpeg artifacts watermark signature deformed ugly noisy grainy cropped
style minimal minimalist clean flat vector isometric technical schematic labelled labeled
mood moody epic serene calm dark fantasy sci-fi futuristic ancient medieval environment landscape
matte oil watercolor digital trending artstation octane unreal engine
""".split()


# The words of the built-in template library, so their prompts count tokens the way a real CLIP
# tokenizer would (a word outside the vocabulary costs one token per letter).
LIBRARY_WORDS += """
about accent accurate across action add afternoon afterwards against aligned allowed alone anatomy
ancestral angles another any anything aperture api area around as ask asymmetrical atmosphere
atmospheres atmospheric awe backdrop backdrops backend backends backgrounds backlight balancer
between blockout blown blueprint border branches brand browser brushstrokes cache capable carries
carrying cartoon cast casting centered central cgi change charcoal check checkpoints cheek class
clay clear clip close clutter cluttered coffee collar color colors colossal come comes comma
commerce commercial common compare components composite composition compositions compressed
concrete confident connected consistent contact contrast controlled creamy crisp crossing cues cut
database daylight decision deep default defaults degrees desaturated describe description diagonal
diamond diffuse diffused diffusers diffusion directional directly distinctive distorted docs
documentary does down dpm draft drawn drifts dripper drizzle drop dust dynamic each early edged
edges editorial elif else emotional empty end endif endmacro enormous environmental environments
euler even evenly exactly expansive explains explore extra extreme eye face fading fails falloff
feel figure fill film fine fingerprints fingers finish fisherman floating flowing focal follows
forms frame frames framing free front garble garbled generous gentle geometry gibberish gives glow
glowing god gouache gpt gradient gradients grading grain graphic grid grouped guidance hand hands
happens harsh haze heavy height hero heroic high horizon horizontal how idea if import infographic
ink is ish isolated it items join karras keep keeps key kind kinds language lantern last late lay
layers layout layouts lead leads leave legible length lenses letters level levels library lifelines
lifestyle lights limited linework list little load locked logs lone long look looking looks looming
loose made marble marker matching material materials matter media medium melancholic melted mending
midday milestones mind misspelled model models modern modifiers moods more most much muddy muted
name named names naming native negative net node notes noun oak object objects old ominous one only
opaque openai or order out outward overgrown overhead overlapping oversaturate oversaturated own
packshot painterly palette paper participants past pastel pavement people per perspective
photobashed photographers photography phrase phrases pier pins places plain plastic playful point
polished pour practical prefer production prompt prompts props pure pushes quarter quiet quote
quoted radiating range rays reaches read readable reads real realism reflection reflections
reflective reliably rembrandt rendering renders request resolve restrict retouched revised reward
rich rims room rounded ruins same sampler sans saturated scale scene scheduler scratches season see
seed seeds sense separated separation sequence serif server set sets setting setup setups shadow
shadows shallow shared short shots should showing side sign silhouettes simple single size skin
skylight slides slightly smooth softbox softboxes softly spaced specific speckled spelled spells
split stable standard steers steps still stoneware storybook straight strip stroke strong structure
structures study styled styles styling subject subtle such suit sunlight surface sweep symmetrical
table tags tail tangents template templates texture textures than that their them these three
through time timeline tokens tone tones topic towering tracing turns twilight two unknown unlabeled
up use value variable variables varied variety vast veining vertical view visible visual walnut
wanderer wants warped wash waxy way weather weathered web weigh weights well wet what where
whimsical whiteboard whitespace who width window without wooden word words world written
""".split()


def _bytes_to_unicode() -> dict[int, str]:
    # The byte ↔ printable-character table of GPT-2/CLIP byte-level BPE.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _train_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges learned from ``words`` until each is one symbol; deterministic.

    Classic BPE training: repeatedly merge the most frequent adjacent pair (ties broken by the pair
    itself). A hand-made list of merges per word does not work: another word's merge of a later pair
    can have a lower rank and block a word's own chain when the tokenizer applies merges by rank.
    """
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in sorted(set(words))]
    counts: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for k, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:]):
            counts[pair] += 1
            where[pair].add(k)
    merges: list[tuple[str, str]] = []
    while counts:
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for k in sorted(where.pop(best)):
            seq = seqs[k]
            for pair in zip(seq, seq[1:]):  # forget this word's pairs, then count its merged form
                counts[pair] -= 1
                if counts[pair] <= 0:
                    del counts[pair]
                if pair in where:
                    where[pair].discard(k)
            merged, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    merged.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    merged.append(seq[i])
                    i += 1
            seqs[k] = merged
            for pair in zip(merged, merged[1:]):
                counts[pair] += 1
                where[pair].add(k)
    return merges


def tokenizer_files(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and BPE merges in CLIP's format: every byte (alone and word-final), plus each of
    ``words`` as a single token."""
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(_bytes_to_unicode().values()):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    merges = _train_merges(words)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return vocab, merges
