#!/usr/bin/env python3
"""Builds data/norsk-chat.jsonl, tilpass's small Norwegian chat dataset (see data/README.md).

Every conversation is written here, for the project: hand-written dialogues below, and short
question/answer drills composed from hand-written word and fact tables (capitals, counties,
weekdays, Bokmål-Nynorsk word pairs, arithmetic). Nothing is copied from another corpus.

    python3 data/build_norsk_chat.py      # rewrites data/norsk-chat.jsonl (deterministic)
"""

import json
import pathlib
import random

OUT = pathlib.Path(__file__).resolve().parent / "norsk-chat.jsonl"
rng = random.Random(20261122)
rows = []


def conv(lang, task, *turns):
    """turns: user, assistant, user, assistant, ..."""
    msgs = []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    rows.append({"messages": msgs, "lang": lang, "task": task})


# ---------------------------------------------------------------- hand-written dialogues (nb)
NB = [
    ("forklaring", "Hva er fotosyntese?",
     "Fotosyntese er prosessen der planter bruker sollys, vann og karbondioksid til å lage sukker. Oksygen blir frigjort som et biprodukt."),
    ("forklaring", "Hvorfor er himmelen blå?",
     "Sollyset spres av molekylene i luften, og blått lys spres mye mer enn rødt lys. Derfor ser vi blått lys fra alle retninger på himmelen."),
    ("forklaring", "Hva betyr ordet «dugnad»?",
     "En dugnad er frivillig, ulønnet arbeid som folk gjør sammen for fellesskapet, for eksempel å rydde et uteområde i borettslaget."),
    ("forklaring", "Hva er forskjellen på bokmål og nynorsk?",
     "Bokmål og nynorsk er de to offisielle skriftformene av norsk. Bokmål bygger på dansk skriftspråk, mens nynorsk ble laget av Ivar Aasen med utgangspunkt i norske dialekter."),
    ("forklaring", "Hva er en fjord?",
     "En fjord er en lang og smal havarm som går inn i landet mellom bratte fjell. Fjordene ble formet av isbreer under istidene."),
    ("forklaring", "Hva er allemannsretten?",
     "Allemannsretten gir alle rett til å ferdes fritt i utmark, for eksempel i skog og på fjellet, så lenge man viser hensyn til natur, dyr og grunneiere."),
    ("forklaring", "Hva er midnattssol?",
     "Midnattssol betyr at solen er over horisonten hele døgnet. I Nord-Norge skjer det om sommeren, nord for polarsirkelen."),
    ("forklaring", "Hva gjør en språkmodell?",
     "En språkmodell beregner hvor sannsynlig det neste ordet er, gitt teksten foran. Slik kan den fullføre setninger og svare på spørsmål."),
    ("forklaring", "Hva er et primtall?",
     "Et primtall er et helt tall større enn 1 som bare kan deles på 1 og seg selv. Eksempler er 2, 3, 5, 7 og 11."),
    ("forklaring", "Hva er nordlys?",
     "Nordlys oppstår når elektrisk ladde partikler fra solen treffer atmosfæren og får gassene der til å lyse, oftest i grønt."),
    ("råd", "Jeg sover dårlig. Har du noen tips?",
     "Prøv å legge deg og stå opp til samme tid hver dag, unngå skjermer den siste timen før du sover, og hold soverommet kjølig og mørkt."),
    ("råd", "Hvordan kan jeg lære meg nynorsk raskere?",
     "Les litt nynorsk hver dag, for eksempel nyheter eller noveller, og skriv korte tekster selv. Lag en liste over ord som skiller seg fra bokmål, som «ikkje», «eg» og «kva»."),
    ("råd", "Hva bør jeg ha med på en dagstur i fjellet?",
     "Ta med vindjakke, ekstra ulltrøye, lue og votter, mat og drikke, kart og kompass, og en ladet mobil. Sjekk værmeldingen før du går."),
    ("råd", "Hvordan kan jeg spare strøm hjemme?",
     "Senk innetemperaturen litt, slå av lys i rom du ikke bruker, ta kortere dusjer og vask klær på lavere temperatur."),
    ("råd", "Jeg skal holde en presentasjon i morgen og er nervøs. Hva gjør jeg?",
     "Øv høyt et par ganger i dag, gjerne for en venn. Pust rolig før du begynner, og husk at de fleste i salen ønsker at du skal lykkes."),
    ("råd", "Hvordan tar jeg vare på en potteplante?",
     "Gi den lys, men ikke sterk direkte sol hele dagen. Vann når jorden er tørr et par centimeter ned, og sørg for at vannet kan renne ut av potten."),
    ("omskriving", "Skriv denne setningen enklere: «Grunnet uforutsette omstendigheter vil møtet bli utsatt.»",
     "Møtet blir utsatt fordi noe uventet har skjedd."),
    ("omskriving", "Gjør setningen mer høflig: «Send meg rapporten nå.»",
     "Kan du være så snill å sende meg rapporten når du har anledning?"),
    ("omskriving", "Skriv om til nynorsk: «Jeg vet ikke hva jeg skal gjøre.»",
     "Eg veit ikkje kva eg skal gjere."),
    ("omskriving", "Skriv om til nynorsk: «Hvor bor du?»",
     "Kvar bur du?"),
    ("omskriving", "Skriv om til nynorsk: «Vi skal spise middag hjemme i kveld.»",
     "Vi skal ete middag heime i kveld."),
    ("oppsummering", "Oppsummer i én setning: «Kommunen har vedtatt å bygge en ny skole. Skolen skal stå ferdig om tre år og få plass til fem hundre elever. Den gamle skolen blir revet.»",
     "Kommunen bygger en ny skole for fem hundre elever som skal stå ferdig om tre år, og den gamle blir revet."),
    ("oppsummering", "Oppsummer kort: «Været i helgen blir vått og vindfullt på Vestlandet, mens Østlandet får opphold og sol. Temperaturen faller mot søndag.»",
     "Vått og vind i vest, sol i øst, og kaldere mot søndag."),
    ("oppsummering", "Gi meg hovedpoenget: «Forskere har funnet at korte gåturer etter måltider kan senke blodsukkeret. Effekten var tydelig allerede etter ti minutter.»",
     "Selv ti minutters gange etter et måltid kan senke blodsukkeret."),
    ("skriving", "Skriv en kort takkemelding til en kollega som hjalp meg med et prosjekt.",
     "Hei! Tusen takk for hjelpen med prosjektet. Innsatsen din gjorde en stor forskjell, og jeg setter veldig pris på det."),
    ("skriving", "Skriv et kort dikt om høst.",
     "Gule blad på våt asfalt,\nmørket kommer tidlig nå,\nkaffe varmer kalde hender\nmens regnet trommer på."),
    ("skriving", "Foreslå tre navn på en kafé i Bergen.",
     "Her er tre forslag: «Regnbuen», «Bryggekoppen» og «Fløyen Kaffebar»."),
    ("skriving", "Skriv en kort invitasjon til en bursdagsfest på lørdag.",
     "Du er invitert til bursdagsfest på lørdag klokken 18! Det blir mat, musikk og god stemning. Gi beskjed om du kommer."),
    ("samtale", "Hei! Hvordan har du det?",
     "Hei! Jeg har det bra, takk. Hva kan jeg hjelpe deg med i dag?"),
    ("samtale", "Takk for hjelpen!",
     "Bare hyggelig! Si ifra hvis det er noe mer du lurer på."),
    ("samtale", "Kan du snakke norsk?",
     "Ja, jeg kan svare på både bokmål og nynorsk. Hva vil du snakke om?"),
    ("oppskrift", "Hvordan koker jeg et egg som er bløtkokt?",
     "Legg egget i kokende vann og la det koke i omtrent seks minutter. Avkjøl det i kaldt vann etterpå."),
    ("oppskrift", "Hva trenger jeg for å lage vafler?",
     "Du trenger hvetemel, egg, melk, sukker, smeltet smør og litt kardemomme hvis du vil. Rør en jevn røre og stek i vaffeljern."),
    ("oppskrift", "Hvordan lager jeg grøt?",
     "Kok opp havregryn og vann eller melk, omtrent én del gryn til to deler væske. Rør i noen minutter til grøten tykner, og tilsett en klype salt."),
    ("fakta", "Hvor mange fylker har Norge?",
     "Fra 2024 har Norge femten fylker."),
    ("fakta", "Hva er Norges høyeste fjell?",
     "Norges høyeste fjell er Galdhøpiggen i Jotunheimen, 2469 meter over havet."),
    ("fakta", "Hva heter Norges lengste elv?",
     "Norges lengste elv er Glomma."),
    ("fakta", "Når er Norges nasjonaldag?",
     "Norges nasjonaldag er 17. mai. Den feirer grunnloven fra 1814."),
    ("fakta", "Hvem skrev «Et dukkehjem»?",
     "«Et dukkehjem» ble skrevet av Henrik Ibsen og hadde premiere i 1879."),
    ("fakta", "Hvem laget nynorsk?",
     "Ivar Aasen la grunnlaget for nynorsk, som han kalte landsmål, på midten av 1800-tallet."),
]
NB_MULTI = [
    ("samtale", "Jeg vil begynne å løpe. Hvor skal jeg starte?",
     "Start rolig med korte turer der du veksler mellom å gå og løpe, for eksempel tre ganger i uken.",
     "Hvor lenge bør hver tur vare?",
     "Tjue til tretti minutter er nok i starten. Øk litt hver uke når kroppen har vent seg til det."),
    ("samtale", "Kan du hjelpe meg å velge en bok?",
     "Gjerne! Liker du spenning, historie eller noe helt annet?",
     "Spenning.",
     "Da kan du prøve en norsk krimroman. Mange liker å begynne med en av de kjente krimseriene fra Oslo eller Bergen."),
    ("samtale", "Hva er klokken i Tokyo når den er tolv i Oslo?",
     "Om vinteren er Tokyo åtte timer foran Oslo, så da er klokken åtte om kvelden der.",
     "Og om sommeren?",
     "Om sommeren har Norge sommertid, men Japan ikke, så forskjellen er sju timer. Da er klokken sju om kvelden i Tokyo."),
    ("samtale", "Hva er et godt navn på en hund?",
     "Populære hundenavn i Norge er for eksempel Luna, Bamse, Milo og Tassen.",
     "Hva med en stor, rolig hund?",
     "Da passer kanskje Bjørn, Bamse eller Troll godt."),
]

# ---------------------------------------------------------------- hand-written dialogues (nn)
NN = [
    ("forklaring", "Kva er fotosyntese?",
     "Fotosyntese er prosessen der plantar brukar sollys, vatn og karbondioksid til å lage sukker. Oksygen blir sleppt ut som eit biprodukt."),
    ("forklaring", "Kvifor er himmelen blå?",
     "Sollyset blir spreidd av molekyla i lufta, og blått lys blir spreidd mykje meir enn raudt lys. Difor ser vi blått lys frå alle kantar av himmelen."),
    ("forklaring", "Kva tyder ordet «dugnad»?",
     "Ein dugnad er friviljug arbeid utan løn som folk gjer saman for fellesskapet, til dømes å rydde uteområdet i burettslaget."),
    ("forklaring", "Kva er skilnaden på bokmål og nynorsk?",
     "Bokmål og nynorsk er dei to offisielle skriftformene av norsk. Nynorsk vart laga av Ivar Aasen på grunnlag av norske dialektar, medan bokmål byggjer på dansk skriftspråk."),
    ("forklaring", "Kva er ein fjord?",
     "Ein fjord er ein lang og smal havarm som går inn i landet mellom bratte fjell. Fjordane vart forma av isbrear under istidene."),
    ("forklaring", "Kva er allemannsretten?",
     "Allemannsretten gjev alle rett til å ferdast fritt i utmark, til dømes i skogen og på fjellet, så lenge ein tek omsyn til natur, dyr og grunneigarar."),
    ("forklaring", "Kva er midnattssol?",
     "Midnattssol tyder at sola er over horisonten heile døgeret. I Nord-Noreg skjer det om sommaren, nord for polarsirkelen."),
    ("forklaring", "Kva er eit primtal?",
     "Eit primtal er eit heilt tal større enn 1 som berre kan delast på 1 og seg sjølv. Døme er 2, 3, 5, 7 og 11."),
    ("forklaring", "Kva er nordlys?",
     "Nordlys oppstår når elektrisk ladde partiklar frå sola treffer atmosfæren og får gassane der til å lyse, oftast i grønt."),
    ("forklaring", "Kva gjer ein språkmodell?",
     "Ein språkmodell reknar ut kor sannsynleg det neste ordet er, gitt teksten framfor. Slik kan han fullføre setningar og svare på spørsmål."),
    ("råd", "Eg søv dårleg. Har du nokre råd?",
     "Prøv å leggje deg og stå opp til same tid kvar dag, unngå skjermar den siste timen før du søv, og hald soverommet kjølig og mørkt."),
    ("råd", "Korleis kan eg lære meg nynorsk fortare?",
     "Les litt nynorsk kvar dag, til dømes nyheiter eller noveller, og skriv korte tekstar sjølv. Lag ei liste over ord som skil seg frå bokmål, som «ikkje», «eg» og «kva»."),
    ("råd", "Kva bør eg ha med på ein dagstur i fjellet?",
     "Ta med vindjakke, ei ekstra ulltrøye, lue og vottar, mat og drikke, kart og kompass og ein lada mobil. Sjekk vêrmeldinga før du går."),
    ("råd", "Korleis kan eg spare straum heime?",
     "Senk innetemperaturen litt, slå av lyset i rom du ikkje brukar, dusj kortare og vask kleda på lågare temperatur."),
    ("råd", "Eg skal halde ein presentasjon i morgon og er nervøs. Kva gjer eg?",
     "Øv høgt eit par gonger i dag, gjerne for ein ven. Pust roleg før du byrjar, og hugs at dei fleste i salen ønskjer at du skal lukkast."),
    ("omskriving", "Skriv om til bokmål: «Eg veit ikkje kva eg skal gjere.»",
     "Jeg vet ikke hva jeg skal gjøre."),
    ("omskriving", "Skriv om til bokmål: «Kvar bur du?»",
     "Hvor bor du?"),
    ("omskriving", "Skriv denne setninga enklare: «Grunna uføresette omstende vil møtet bli utsett.»",
     "Møtet blir utsett fordi noko uventa har skjedd."),
    ("omskriving", "Gjer setninga meir høfleg: «Send meg rapporten no.»",
     "Kan du vere så snill å sende meg rapporten når du har høve?"),
    ("oppsummering", "Oppsummer i éi setning: «Kommunen har vedteke å byggje ein ny skule. Skulen skal stå ferdig om tre år og få plass til fem hundre elevar. Den gamle skulen blir riven.»",
     "Kommunen byggjer ein ny skule for fem hundre elevar som skal stå ferdig om tre år, og den gamle blir riven."),
    ("oppsummering", "Oppsummer kort: «Vêret i helga blir vått og vindfullt på Vestlandet, medan Austlandet får opphald og sol. Temperaturen fell mot sundag.»",
     "Vått og vind i vest, sol i aust, og kaldare mot sundag."),
    ("skriving", "Skriv ei kort takkemelding til ein kollega som hjelpte meg med eit prosjekt.",
     "Hei! Tusen takk for hjelpa med prosjektet. Innsatsen din gjorde stor skilnad, og eg set verkeleg pris på det."),
    ("skriving", "Skriv eit kort dikt om vinter.",
     "Kvit snø over tunet,\nstille og kaldt i kveld,\nljoset frå glaset\nvarmar meir enn elden sjølv."),
    ("skriving", "Skriv ein kort invitasjon til ein bursdagsfest på laurdag.",
     "Du er invitert til bursdagsfest på laurdag klokka 18! Det blir mat, musikk og god stemning. Gje beskjed om du kjem."),
    ("samtale", "Hei! Korleis har du det?",
     "Hei! Eg har det bra, takk. Kva kan eg hjelpe deg med i dag?"),
    ("samtale", "Takk for hjelpa!",
     "Berre hyggeleg! Sei ifrå om det er noko meir du lurer på."),
    ("samtale", "Kan du snakke nynorsk?",
     "Ja, eg kan svare på nynorsk og bokmål. Kva vil du snakke om?"),
    ("oppskrift", "Korleis kokar eg eit bløtkokt egg?",
     "Legg egget i kokande vatn og la det koke i om lag seks minutt. Kjøl det ned i kaldt vatn etterpå."),
    ("oppskrift", "Korleis lagar eg graut?",
     "Kok opp havregryn og vatn eller mjølk, om lag éin del gryn til to delar væske. Rør i nokre minutt til grauten tjuknar, og ha i ei klype salt."),
    ("oppskrift", "Kva treng eg for å lage vaflar?",
     "Du treng kveitemjøl, egg, mjølk, sukker, smelta smør og litt kardemomme om du vil. Rør ei jamn røre og stek i vaffeljern."),
    ("fakta", "Kor mange fylke har Noreg?",
     "Frå 2024 har Noreg femten fylke."),
    ("fakta", "Kva er det høgaste fjellet i Noreg?",
     "Det høgaste fjellet i Noreg er Galdhøpiggen i Jotunheimen, 2469 meter over havet."),
    ("fakta", "Kva heiter den lengste elva i Noreg?",
     "Den lengste elva i Noreg er Glomma."),
    ("fakta", "Når er nasjonaldagen i Noreg?",
     "Nasjonaldagen i Noreg er 17. mai. Han feirar grunnlova frå 1814."),
    ("fakta", "Kven skapte nynorsk?",
     "Ivar Aasen la grunnlaget for nynorsk, som han kalla landsmål, på midten av 1800-talet."),
    ("fakta", "Kven skreiv «Terje Vigen»?",
     "Diktet «Terje Vigen» vart skrive av Henrik Ibsen."),
]
NN_MULTI = [
    ("samtale", "Eg vil byrje å springe. Kvar skal eg starte?",
     "Start roleg med korte turar der du vekslar mellom å gå og springe, til dømes tre gonger i veka.",
     "Kor lenge bør kvar tur vare?",
     "Tjue til tretti minutt er nok i starten. Auk litt kvar veke når kroppen har vent seg til det."),
    ("samtale", "Kan du hjelpe meg å velje ei bok?",
     "Gjerne! Likar du spenning, historie eller noko heilt anna?",
     "Historie.",
     "Då kan du prøve ein historisk roman frå vikingtida eller ei bok om krigsåra i Noreg."),
    ("samtale", "Kva er eit godt namn på ein katt?",
     "Populære kattenamn i Noreg er til dømes Pusur, Nala, Simba og Tiger.",
     "Kva med ein svart katt?",
     "Då passar kanskje Natta, Skugge eller Kol godt."),
]

for task, q, a in NB:
    conv("nb", task, q, a)
for task, *t in NB_MULTI:
    conv("nb", task, *t)
for task, q, a in NN:
    conv("nn", task, q, a)
for task, *t in NN_MULTI:
    conv("nn", task, *t)

# ---------------------------------------------------------------- capitals
CAPITALS = [
    ("Sverige", "Stockholm"), ("Danmark", "København"), ("Finland", "Helsingfors"),
    ("Island", "Reykjavík"), ("Tyskland", "Berlin"), ("Frankrike", "Paris"),
    ("Spania", "Madrid"), ("Italia", "Roma"), ("Portugal", "Lisboa"),
    ("Nederland", "Amsterdam"), ("Belgia", "Brussel"), ("Polen", "Warszawa"),
    ("Østerrike", "Wien"), ("Sveits", "Bern"), ("Hellas", "Athen"), ("Irland", "Dublin"),
    ("Storbritannia", "London"), ("Estland", "Tallinn"), ("Latvia", "Riga"),
    ("Litauen", "Vilnius"), ("Ungarn", "Budapest"), ("Tsjekkia", "Praha"),
    ("Canada", "Ottawa"), ("Japan", "Tokyo"), ("Egypt", "Kairo"), ("Kenya", "Nairobi"),
    ("Argentina", "Buenos Aires"), ("Australia", "Canberra"),
]
for land, city in CAPITALS:
    conv("nb", "fakta", f"Hva er hovedstaden i {land}?", f"Hovedstaden i {land} er {city}.")
    conv("nn", "fakta", f"Kva er hovudstaden i {land}?", f"Hovudstaden i {land} er {city}.")
conv("nb", "fakta", "Hva er hovedstaden i Norge?", "Hovedstaden i Norge er Oslo.")
conv("nn", "fakta", "Kva er hovudstaden i Noreg?", "Hovudstaden i Noreg er Oslo.")

# ---------------------------------------------------------------- towns and counties (2024)
COUNTIES = [
    ("Bergen", "Vestland"), ("Trondheim", "Trøndelag"), ("Stavanger", "Rogaland"),
    ("Tromsø", "Troms"), ("Bodø", "Nordland"), ("Kristiansand", "Agder"),
    ("Ålesund", "Møre og Romsdal"), ("Lillehammer", "Innlandet"), ("Drammen", "Buskerud"),
    ("Fredrikstad", "Østfold"), ("Tønsberg", "Vestfold"), ("Skien", "Telemark"),
    ("Alta", "Finnmark"), ("Hamar", "Innlandet"), ("Molde", "Møre og Romsdal"),
    ("Haugesund", "Rogaland"), ("Arendal", "Agder"), ("Harstad", "Troms"),
    ("Førde", "Vestland"), ("Steinkjer", "Trøndelag"),
]
for town, county in COUNTIES:
    conv("nb", "fakta", f"Hvilket fylke ligger {town} i?", f"{town} ligger i {county}.")
    conv("nn", "fakta", f"Kva fylke ligg {town} i?", f"{town} ligg i {county}.")

# ---------------------------------------------------------------- weekdays and months
DAYS_NB = ["mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag"]
DAYS_NN = ["måndag", "tysdag", "onsdag", "torsdag", "fredag", "laurdag", "sundag"]
for i in range(7):
    a, b = DAYS_NB[i], DAYS_NB[(i + 1) % 7]
    conv("nb", "kalender", f"Hvilken dag kommer etter {a}?", f"Etter {a} kommer {b}.")
    a, b = DAYS_NN[i], DAYS_NN[(i + 1) % 7]
    conv("nn", "kalender", f"Kva dag kjem etter {a}?", f"Etter {a} kjem {b}.")
MONTHS = ["januar", "februar", "mars", "april", "mai", "juni", "juli", "august",
          "september", "oktober", "november", "desember"]
for i in range(12):
    a, b = MONTHS[i], MONTHS[(i + 1) % 12]
    if i % 2 == 0:
        conv("nb", "kalender", f"Hvilken måned kommer etter {a}?", f"Etter {a} kommer {b}.")
    else:
        conv("nn", "kalender", f"Kva månad kjem etter {a}?", f"Etter {a} kjem {b}.")

# ---------------------------------------------------------------- English -> Norwegian words
WORDS = [  # english, bokmål, nynorsk
    ("house", "hus", "hus"), ("book", "bok", "bok"), ("water", "vann", "vatn"),
    ("friend", "venn", "ven"), ("snow", "snø", "snø"), ("week", "uke", "veke"),
    ("church", "kirke", "kyrkje"), ("home", "hjem", "heim"), ("dog", "hund", "hund"),
    ("cat", "katt", "katt"), ("mountain", "fjell", "fjell"), ("sun", "sol", "sol"),
    ("moon", "måne", "måne"), ("school", "skole", "skule"), ("question", "spørsmål", "spørsmål"),
    ("language", "språk", "språk"), ("boat", "båt", "båt"), ("bread", "brød", "brød"),
    ("milk", "melk", "mjølk"), ("apple", "eple", "eple"), ("boy", "gutt", "gut"),
    ("love", "kjærlighet", "kjærleik"), ("weather", "vær", "vêr"), ("night", "natt", "natt"),
    ("morning", "morgen", "morgon"), ("evening", "kveld", "kveld"), ("flour", "mel", "mjøl"),
    ("wheat", "hvete", "kveite"), ("white", "hvit", "kvit"), ("future", "fremtid", "framtid"),
]
for en, nb, nn in WORDS:
    conv("nb", "oversetting", f"Hva heter «{en}» på norsk?", f"«{en.capitalize()}» heter «{nb}» på bokmål.")
    conv("nn", "oversetting", f"Kva heiter «{en}» på norsk?", f"«{en.capitalize()}» heiter «{nn}» på nynorsk.")

# ---------------------------------------------------------------- Bokmål -> Nynorsk
PAIRS = [
    ("ikke", "ikkje"), ("jeg", "eg"), ("hva", "kva"), ("hvordan", "korleis"),
    ("hvorfor", "kvifor"), ("hvem", "kven"), ("hvor", "kvar"), ("mye", "mykje"),
    ("noe", "noko"), ("bare", "berre"), ("uke", "veke"), ("hjem", "heim"), ("kirke", "kyrkje"),
    ("spørre", "spørje"), ("melk", "mjølk"), ("kjærlighet", "kjærleik"), ("morgen", "morgon"),
    ("vann", "vatn"), ("skole", "skule"), ("hvit", "kvit"), ("høre", "høyre"),
    ("fremtid", "framtid"), ("hovedstad", "hovudstad"), ("begynne", "byrje"),
    ("tenke", "tenkje"), ("også", "òg"), ("noen", "nokon"), ("hel", "heil"),
]
for i, (nb, nn) in enumerate(PAIRS):
    if i % 2 == 0:
        conv("nb", "nynorsk", f"Hva er «{nb}» på nynorsk?", f"«{nb.capitalize()}» heter «{nn}» på nynorsk.")
    else:
        conv("nn", "nynorsk", f"Kva er «{nb}» på nynorsk?", f"«{nb.capitalize()}» heiter «{nn}» på nynorsk.")
    conv("nn", "bokmål", f"Kva er «{nn}» på bokmål?", f"«{nn.capitalize()}» heiter «{nb}» på bokmål.")

# ---------------------------------------------------------------- opposites
OPPOSITES = [  # bokmål pair, nynorsk pair
    (("stor", "liten"), ("stor", "liten")), (("varm", "kald"), ("varm", "kald")),
    (("lys", "mørk"), ("lys", "mørk")), (("tung", "lett"), ("tung", "lett")),
    (("høy", "lav"), ("høg", "låg")), (("lang", "kort"), ("lang", "kort")),
    (("våt", "tørr"), ("våt", "tørr")), (("tidlig", "sen"), ("tidleg", "sein")),
    (("sterk", "svak"), ("sterk", "veik")), (("full", "tom"), ("full", "tom")),
    (("billig", "dyr"), ("billeg", "dyr")), (("rik", "fattig"), ("rik", "fattig")),
    (("ren", "skitten"), ("rein", "skitten")), (("hard", "myk"), ("hard", "mjuk")),
    (("gammel", "ung"), ("gammal", "ung")), (("glad", "trist"), ("glad", "trist")),
    (("smal", "bred"), ("smal", "brei")), (("tykk", "tynn"), ("tjukk", "tynn")),
]
for (a, b), (c, d) in OPPOSITES:
    conv("nb", "ord", f"Hva er det motsatte av «{a}»?", f"Det motsatte av «{a}» er «{b}».")
    conv("nn", "ord", f"Kva er det motsette av «{d}»?", f"Det motsette av «{d}» er «{c}».")

# ---------------------------------------------------------------- arithmetic
for i in range(36):
    x, y = rng.randint(2, 20), rng.randint(2, 20)
    op = i % 3
    if op == 0:
        nbq, nnq, sym, val = "pluss", "pluss", "pluss", x + y
    elif op == 1:
        x, y = max(x, y), min(x, y)
        nbq, nnq, sym, val = "minus", "minus", "minus", x - y
    else:
        x, y = x % 10 + 2, y % 10 + 2
        nbq, nnq, sym, val = "ganger", "gonger", None, x * y
    if i % 2 == 0:
        conv("nb", "regning", f"Hva er {x} {nbq} {y}?", f"{x} {nbq} {y} er {val}.")
    else:
        conv("nn", "regning", f"Kva er {x} {nnq} {y}?", f"{x} {nnq} {y} er {val}.")

# ---------------------------------------------------------------- numbers in words
ONES_NB = ["", "en", "to", "tre", "fire", "fem", "seks", "sju", "åtte", "ni"]
ONES_NN = ["", "ein", "to", "tre", "fire", "fem", "seks", "sju", "åtte", "ni"]
TENS = {2: "tjue", 3: "tretti", 4: "førti", 5: "femti", 6: "seksti", 7: "sytti", 8: "åtti",
        9: "nitti"}
for i, n in enumerate(rng.sample(range(21, 100), 30)):
    t, o = divmod(n, 10)
    if i % 2 == 0:
        conv("nb", "tall", f"Skriv tallet {n} med bokstaver.", f"{n} skrives «{TENS[t]}{ONES_NB[o]}».")
    else:
        conv("nn", "tal", f"Skriv talet {n} med bokstavar.", f"{n} blir skrive «{TENS[t]}{ONES_NN[o]}».")

# ---------------------------------------------------------------- sentiment
POS_NB = ["Maten var helt nydelig, og servitøren var hyggelig.", "Filmen var morsom fra start til slutt.",
          "Jeg er veldig fornøyd med den nye sykkelen.", "For en herlig dag på stranden!",
          "Konserten i går var fantastisk.", "Boka var spennende og godt skrevet.",
          "Kundeservice løste problemet mitt på fem minutter.", "Hotellet var rent og rolig."]
NEG_NB = ["Toget var forsinket igjen, og ingen sa noe.", "Pakken kom ødelagt og for sent.",
          "Filmen var kjedelig og altfor lang.", "Jeg angrer på at jeg kjøpte denne telefonen.",
          "Maten var kald og smakte ingenting.", "Det regnet hele ferien, og hytta var kald.",
          "Appen krasjer hver gang jeg åpner den.", "Servicen var treg og uvennlig."]
POS_NN = ["Maten var heilt nydeleg, og servitøren var hyggeleg.", "Filmen var morosam frå start til slutt.",
          "Eg er veldig nøgd med den nye sykkelen.", "For ein herleg dag på stranda!",
          "Konserten i går var fantastisk.", "Boka var spennande og godt skriven.",
          "Kundeservice løyste problemet mitt på fem minutt.", "Hotellet var reint og roleg."]
NEG_NN = ["Toget var forseinka igjen, og ingen sa noko.", "Pakken kom øydelagd og for seint.",
          "Filmen var kjedeleg og altfor lang.", "Eg angrar på at eg kjøpte denne telefonen.",
          "Maten var kald og smakte ingenting.", "Det regna heile ferien, og hytta var kald.",
          "Appen krasjar kvar gong eg opnar han.", "Tenesta var treg og uvenleg."]
for s in POS_NB:
    conv("nb", "sentiment", f"Er denne setningen positiv eller negativ? «{s}»", "Setningen er positiv.")
for s in NEG_NB:
    conv("nb", "sentiment", f"Er denne setningen positiv eller negativ? «{s}»", "Setningen er negativ.")
for s in POS_NN:
    conv("nn", "sentiment", f"Er denne setninga positiv eller negativ? «{s}»", "Setninga er positiv.")
for s in NEG_NN:
    conv("nn", "sentiment", f"Er denne setninga positiv eller negativ? «{s}»", "Setninga er negativ.")

rng.shuffle(rows)
for i, r in enumerate(rows):
    r["id"] = f"norsk-chat-{i:04d}"
    r["split"] = "eval" if i % 10 == 9 else "train"
with OUT.open("w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps({"id": r["id"], "split": r["split"], "lang": r["lang"],
                            "task": r["task"], "messages": r["messages"]}, ensure_ascii=False) + "\n")
langs = {}
for r in rows:
    langs[r["lang"]] = langs.get(r["lang"], 0) + 1
print(f"{len(rows)} conversations -> {OUT}: {langs}")
