import sys, re
src = open(sys.argv[1]).read()
out = []
i = 0
while True:
    j = src.find('<<<', i)
    if j < 0:
        out.append(src[i:]); break
    # scan back for the kernel name (identifier with optional balanced template args)
    k = j
    if src[k-1] == '>':
        depth = 0; k -= 1
        while True:
            if src[k] == '>': depth += 1
            elif src[k] == '<':
                depth -= 1
                if depth == 0: break
            k -= 1
    while k > 0 and (src[k-1].isalnum() or src[k-1] in '_:'): k -= 1
    name = src[k:j]
    e = src.find('>>>', j)
    inner = src[j+3:e]
    parts, depth, cur = [], 0, ''
    for ch in inner:
        if ch in '(<[': depth += 1
        if ch in ')>]': depth -= 1
        if ch == ',' and depth == 0: parts.append(cur); cur = ''
        else: cur += ch
    parts.append(cur)
    assert len(parts) == 4, (name, parts)
    assert src[e+3] == '(', name
    out.append(src[i:k])
    out.append('emu_launch(dim3(%s), dim3(%s), %s, ' % (parts[0].strip(), parts[1].strip(), name))
    i = e + 4
open(sys.argv[2], 'w').write(''.join(out))
