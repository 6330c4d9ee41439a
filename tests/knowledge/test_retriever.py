"""The FAQ retriever: realistic debtor questions (typos, no accents, Latin American phrasing) reach the right
document, off-topic questions get no answer, creditor documents win, and the whole thing stays fast."""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from pathlib import Path

import pytest

from bot.domain import FaqAnswer
from bot.nlu import normalize
from knowledge.loader import DEFAULT_ROOT, load_documents
from knowledge.retriever import Answer, KnowledgeBase, Match, Threshold, faq_answerer

# Paraphrases, never copies, of the documents' example questions (test_questions_are_not_copied_from_documents).
# Built in three rounds; docs/knowledge.md gives the figures of the last round before any tuning on it.
SPANISH: list[tuple[str, str]] = [
    ("como pago?", "how-to-pay"),
    ("q medios de pago aceptan", "how-to-pay"),
    ("se puede pagar con tarjeta de credito?", "how-to-pay"),
    ("donde deposito la plata", "how-to-pay"),
    ("me pasan los datos de la cuenta pa transferir", "how-to-pay"),
    ("puedo pagar en el oxxo?", "how-to-pay"),
    ("acepan mercado pago?", "how-to-pay"),
    ("hola, como puedo cancelar la deuda?", "how-to-pay"),
    ("se puede pagar con debito", "how-to-pay"),
    ("donde tengo que ir a pagar en efectivo", "how-to-pay"),
    ("a que cuenta les transfiero", "how-to-pay"),
    ("puedo pagar con yape?", "how-to-pay"),
    ("buenas, por donde puedo pagar lo que debo?", "how-to-pay"),
    ("aceptan pagos con tarjeta de débito o solo efectivo", "how-to-pay"),
    ("me das el cbu para transferir?", "how-to-pay"),
    ("puedo pagar en un banco?", "how-to-pay"),
    ("en que parte veo mi boleta", "invoices-portal"),
    ("donde puedo ver mis facturas pendientes", "invoices-portal"),
    ("cual es el link del portal", "invoices-portal"),
    ("como reviso mi estado de cuenta", "invoices-portal"),
    ("necesito una copia de mi boleta", "invoices-portal"),
    ("no encuentro mi factura", "invoices-portal"),
    ("como entro a ver mis boletas", "invoices-portal"),
    ("me reenvian el link de mi portal?", "invoices-portal"),
    ("donde veo cuando vence mi boleta", "invoices-portal"),
    ("donde miro mis facturas?", "invoices-portal"),
    ("perdi el link donde salen mis boletas", "invoices-portal"),
    ("quiero ver el estado de mi cuenta", "invoices-portal"),
    ("a q hora abren", "hours-contact"),
    ("atienden el domingo?", "hours-contact"),
    ("cual es el telefono de ustedes", "hours-contact"),
    ("donde estan ubicados", "hours-contact"),
    ("horario de atencion?", "hours-contact"),
    ("hasta q hora atienden hoy", "hours-contact"),
    ("tienen oficina en el centro?", "hours-contact"),
    ("me dan un numero para llamarlos", "hours-contact"),
    ("abren los fines de semana?", "hours-contact"),
    ("q horario tienen?", "hours-contact"),
    ("cual es la direccion de sus oficinas", "hours-contact"),
    ("trabajan los sabados?", "hours-contact"),
    ("me pueden dar facilidades para pagar en cuotas", "payment-plan"),
    ("puedo pagar en partes", "payment-plan"),
    ("como funciona lo de las cuotas", "payment-plan"),
    ("se puede hacer un convenio?", "payment-plan"),
    ("puedo pagarlo en cuotas?", "payment-plan"),
    ("me pueden financiar la deuda", "payment-plan"),
    ("quiero hacer un acuerdo de pago, como funciona", "payment-plan"),
    ("me gustaria pagar en cuotas, se puede?", "payment-plan"),
    ("ofrecen convenios de pago?", "payment-plan"),
    ("puedo abonar de a poquito", "payment-plan"),
    ("q pasa si no pago a tiempo", "late-payment"),
    ("me cobran recargo si me atraso unos dias", "late-payment"),
    ("me van a meter a dicom?", "late-payment"),
    ("si pago tarde me suben los intereses?", "late-payment"),
    ("me pueden embargar el sueldo", "late-payment"),
    ("afecta mi historial si no pago?", "late-payment"),
    ("si me atraso me cobran mas?", "late-payment"),
    ("me van a reportar al buro?", "late-payment"),
    ("cuanto es la multa por no pagar a tiempo", "late-payment"),
    ("me pueden hacer juicio por esto", "late-payment"),
    ("que pasa si me atraso con el pago", "late-payment"),
    ("me van a cobrar intereses por la mora?", "late-payment"),
    ("voy a quedar reportado en las centrales de riesgo?", "late-payment"),
    ("que derechos tengo", "debtor-rights"),
    ("tienen q probarme q debo eso", "debtor-rights"),
    ("pueden llamar a mi familia por la deuda?", "debtor-rights"),
    ("como hago para que no me escriban mas por whatsapp", "debtor-rights"),
    ("tengo derecho a pedir que me muestren la deuda?", "debtor-rights"),
    ("pueden dejar de llamarme al trabajo", "debtor-rights"),
    ("quiero hablar con un ejecutivo, puedo?", "debtor-rights"),
    ("que derechos tengo como cliente", "debtor-rights"),
    ("pueden mostrarme el documento que prueba la deuda", "debtor-rights"),
    ("pueden llamarme de noche?", "debtor-rights"),
    ("como reclamo un cobro que no es mio", "disputes"),
    ("esa deuda no es mia, como la disputo", "disputes"),
    ("cuanto se demoran en responder un reclamo", "disputes"),
    ("me estan cobrando de mas, donde reclamo", "disputes"),
    ("como presento un reclamo", "disputes"),
    ("yo no saque ningun credito con ustedes", "disputes"),
    ("el cobro esta duplicado", "disputes"),
    ("quiero reclamar porque el monto no es correcto", "disputes"),
    ("me suplantaron la identidad y esa deuda no es mia", "disputes"),
    ("cambie mi numero de telefono como lo actualizo", "update-contact"),
    ("quiero actualizar mi correo", "update-contact"),
    ("me cambie de casa, como actualizo la direccion", "update-contact"),
    ("como cambio mi celular en sus registros", "update-contact"),
    ("mi correo cambio", "update-contact"),
    ("cambie mi correo electronico, como lo actualizo", "update-contact"),
    ("quiero dar un numero de telefono nuevo", "update-contact"),
    ("necesito el comprobante de pago", "receipts"),
    ("me mandan el recibo de lo que pague?", "receipts"),
    ("donde envio el voucher de la transferencia", "receipts"),
    ("necesito un certificado de que ya no debo nada", "receipts"),
    ("me pueden mandar el comprobante de mi pago", "receipts"),
    ("como se que mi pago llego", "receipts"),
    ("necesito un comprobante de mi ultimo pago", "receipts"),
    ("me pueden enviar el recibo?", "receipts"),
    ("de que empresa son ustedes", "is-this-legit"),
    ("esto es una estafa?", "is-this-legit"),
    ("como se que no me estan estafando", "is-this-legit"),
    ("de donde sacaron mi numero", "is-this-legit"),
    ("ustedes quienes son", "is-this-legit"),
    ("esto es real o es una estafa", "is-this-legit"),
    ("como se que ustedes son de verdad", "is-this-legit"),
    ("por que me estan escribiendo a mi", "is-this-legit"),
]
ENGLISH: list[tuple[str, str]] = [
    ("how do i pay", "how-to-pay"),
    ("do u take credit cards", "how-to-pay"),
    ("can i pay cash", "how-to-pay"),
    ("whats the account number for a wire transfer", "how-to-pay"),
    ("can i pay by venmo", "how-to-pay"),
    ("where do i make a payment in person", "how-to-pay"),
    ("hi how can i pay this off", "how-to-pay"),
    ("can i pay with my debit card", "how-to-pay"),
    ("where do i go to pay cash", "how-to-pay"),
    ("what are the bank details for a transfer", "how-to-pay"),
    ("do you accept zelle", "how-to-pay"),
    ("hey what are my options to pay", "how-to-pay"),
    ("do you guys take debit cards or just cash", "how-to-pay"),
    ("can i pay at a bank", "how-to-pay"),
    ("give me the account details to wire the money", "how-to-pay"),
    ("where can i see my bill", "invoices-portal"),
    ("how do i view my invoices", "invoices-portal"),
    ("wheres my statement", "invoices-portal"),
    ("i lost the portal link", "invoices-portal"),
    ("where can i see when my bill is due", "invoices-portal"),
    ("i can't find my invoice", "invoices-portal"),
    ("how do i see my bills online", "invoices-portal"),
    ("can you resend my portal link", "invoices-portal"),
    ("where do i see when my invoice is due", "invoices-portal"),
    ("where do i look at my invoices", "invoices-portal"),
    ("lost the link where my bills are", "invoices-portal"),
    ("i want to see my account statement", "invoices-portal"),
    ("what time do u open", "hours-contact"),
    ("are you open saturday", "hours-contact"),
    ("whats your phone number", "hours-contact"),
    ("where are you located", "hours-contact"),
    ("business hours?", "hours-contact"),
    ("until what time are you open today", "hours-contact"),
    ("do you have an office downtown", "hours-contact"),
    ("give me a number to call you", "hours-contact"),
    ("are you open sundays", "hours-contact"),
    ("what hours are you guys open", "hours-contact"),
    ("what is the address of your office", "hours-contact"),
    ("do you work saturdays", "hours-contact"),
    ("can i split it into monthly payments", "payment-plan"),
    ("do you offer payment plans", "payment-plan"),
    ("can i pay half now and half later", "payment-plan"),
    ("how do instalments work", "payment-plan"),
    ("can i pay it in installments", "payment-plan"),
    ("can you finance the balance", "payment-plan"),
    ("i want to set up a payment arrangement, how does it work", "payment-plan"),
    ("id like to pay in installments, is that possible", "payment-plan"),
    ("do you offer payment arrangements", "payment-plan"),
    ("can i pay little by little", "payment-plan"),
    ("what happens if i dont pay on time", "late-payment"),
    ("will i get charged a late fee", "late-payment"),
    ("is this going to affect my credit", "late-payment"),
    ("will you report this to the credit bureaus", "late-payment"),
    ("what if im a few days late", "late-payment"),
    ("can you take me to court", "late-payment"),
    ("if im late do i pay more", "late-payment"),
    ("are you reporting me to the credit bureau", "late-payment"),
    ("how much is the penalty for paying late", "late-payment"),
    ("can you sue me for this", "late-payment"),
    ("what happens if im late on my payment", "late-payment"),
    ("will you charge me interest for being late", "late-payment"),
    ("will i be reported to the credit bureaus", "late-payment"),
    ("what are my rights here", "debtor-rights"),
    ("can you verify this debt", "debtor-rights"),
    ("are you allowed to contact my family", "debtor-rights"),
    ("how do i get you to stop texting me", "debtor-rights"),
    ("do i have the right to see proof of the debt", "debtor-rights"),
    ("can you stop calling me at work", "debtor-rights"),
    ("can i talk to a human", "debtor-rights"),
    ("what rights do i have as a customer", "debtor-rights"),
    ("can you show me the document that proves the debt", "debtor-rights"),
    ("can you call me at night", "debtor-rights"),
    ("how do i dispute this", "disputes"),
    ("this isnt my debt how do i fight it", "disputes"),
    ("the amount is incorrect, how do i complain", "disputes"),
    ("how long does a dispute take", "disputes"),
    ("someone stole my identity and opened this", "disputes"),
    ("how do i file a complaint", "disputes"),
    ("i never opened any account with you", "disputes"),
    ("i was billed twice for the same thing", "disputes"),
    ("i want to complain because the amount is not right", "disputes"),
    ("my identity was stolen and this debt isnt mine", "disputes"),
    ("i have a new phone number", "update-contact"),
    ("how do i update my email address", "update-contact"),
    ("i moved, how do i change my address", "update-contact"),
    ("how do i change my cell number in your records", "update-contact"),
    ("my email changed", "update-contact"),
    ("i changed my email how do i update it", "update-contact"),
    ("i want to give you a new phone number", "update-contact"),
    ("can i get a receipt", "receipts"),
    ("i need proof of payment", "receipts"),
    ("where do i send my payment confirmation", "receipts"),
    ("can i get a letter saying its paid off", "receipts"),
    ("can you send me proof of my payment", "receipts"),
    ("how do i know my payment went through", "receipts"),
    ("i need a receipt for my last payment", "receipts"),
    ("can you send me the receipt", "receipts"),
    ("who is writing to me?", "is-this-legit"),
    ("is this legit", "is-this-legit"),
    ("how do i know this isnt a scam", "is-this-legit"),
    ("how did u get my number", "is-this-legit"),
    ("who are you guys", "is-this-legit"),
    ("is this real or a scam", "is-this-legit"),
    ("how do i know you are for real", "is-this-legit"),
    ("why are you texting me", "is-this-legit"),
]
OFF_TOPIC_ES = [
    "cuál es la capital de Francia",
    "asdf",
    "cuéntame un chiste",
    "quién ganó el partido ayer",
    "qué tiempo va a hacer mañana",
    "me recomiendas una película",
    "cómo se hace una torta de chocolate",
    "jajaja",
    "hola",
    "ok",
    "me hacen descuento si pago todo al contado?",
    "tienen trabajo disponible?",
    "cual es tu nombre",
    "eres un robot?",
    "me prestan plata?",
    "cuanto cuesta un iphone",
    "que dia es hoy",
    "estoy manejando",
    "mi perro se comió el control",
    "venden seguros de auto?",
    "me puedes ayudar con mi tarea de matemáticas",
    "qué hora es en Japón",
    "cuál es el mejor equipo de fútbol",
    "dónde queda el cine más cercano",
    "tienen promociones de celulares?",
    "me regalas una recarga",
    "xd",
    "cuál es el sentido de la vida",
    "qwerty",
    "me cantas una canción",
    "a qué hora juega la selección",
    "dónde compro entradas para el concierto",
    "necesito un préstamo nuevo",
    "cómo está el dólar hoy",
]
OFF_TOPIC_EN = [
    "tell me a joke",
    "asdf",
    "what's the capital of France",
    "who won the game last night",
    "what's the weather tomorrow",
    "recommend me a movie",
    "how do I bake a cake",
    "lol",
    "hi",
    "ok",
    "can i get a discount if i pay in full",
    "are you hiring",
    "what's your name",
    "are you a robot",
    "can you lend me money",
    "how much is an iphone",
    "what day is it",
    "i'm driving",
    "my dog ate the remote",
    "do you sell car insurance",
    "can you help me with my math homework",
    "what time is it in Japan",
    "what's the best football team",
    "where's the nearest movie theater",
    "do you have phone deals",
    "can you give me a free top up",
    "xd",
    "what is the meaning of life",
    "qwerty",
    "sing me a song",
    "what time does the game start",
    "where can i buy concert tickets",
    "i need a new loan",
    "how is the dollar today",
]


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase()


@pytest.fixture
def creditor_root(tmp_path: Path) -> Path:
    """The packaged documents plus one creditor's own office hours."""
    root = tmp_path / "docs"
    shutil.copytree(DEFAULT_ROOT, root)
    own = root / "es" / "creditors" / "aguas-del-valle"
    own.mkdir(parents=True)
    (own / "hours-contact.md").write_text(
        "---\ntitle: Horario de Aguas del Valle\ntags: [horario, oficina]\nlocale: es\ncreditor: aguas-del-valle\n"
        "questions:\n  - ¿A qué hora atienden?\n---\n\n"
        "Aguas del Valle atiende de lunes a viernes de 9:00 a 18:00 en Av. Central 123, Talca.\n",
        encoding="utf-8",
    )
    return root


@pytest.mark.parametrize(("language", "cases"), [("es", SPANISH), ("en", ENGLISH)])
def test_realistic_questions_hit_the_right_document(knowledge, capsys, language, cases):
    answered = {question: knowledge.answer(question, language) for question, _ in cases}
    hits = [question for question, expected in cases if (a := answered[question]) and a.source.id == expected]
    wrong = [
        (question, a.source.id) for question, expected in cases if (a := answered[question]) and a.source.id != expected
    ]
    rate = len(hits) / len(cases)
    with capsys.disabled():
        print(
            f"\n[{language}] {len(hits)}/{len(cases)} answered from the right document ({rate:.1%}), {len(wrong)} wrong"
        )
    assert wrong == []  # below the threshold the bot offers a person; it never sends the wrong document
    assert rate >= 0.90


@pytest.mark.parametrize(
    ("question", "language"),
    [("cuál es la capital de Francia", "es"), ("asdf", "es"), ("tell me a joke", "en"), ("asdf", "en")],
)
def test_the_briefs_off_topic_questions_get_no_answer(knowledge, question, language):
    assert knowledge.answer(question, language) is None


@pytest.mark.parametrize(("language", "questions"), [("es", OFF_TOPIC_ES), ("en", OFF_TOPIC_EN)])
def test_off_topic_and_out_of_scope_questions_get_no_answer(knowledge, language, questions):
    answered = {
        question: answer.source.id for question in questions if (answer := knowledge.answer(question, language))
    }
    assert answered == {}


def test_questions_are_not_copied_from_documents():
    for language, cases in (("es", SPANISH), ("en", ENGLISH)):
        examples = {normalize(q) for document in load_documents(locale=language) for q in document.questions}
        assert [question for question, _ in cases if normalize(question) in examples] == []


def test_es_and_en_defaults_cover_the_same_topics():
    spanish = [document.id for document in load_documents(locale="es")]
    english = [document.id for document in load_documents(locale="en")]
    assert spanish == english
    assert len(spanish) >= 8


def test_defaults_are_generic_and_fit_one_message():
    for language in ("es", "en"):
        for document in load_documents(locale=language):
            assert document.creditor is None
            assert len(document.answer) < 600, document.path
            assert len(document.questions) >= 8, document.path


def test_the_answer_is_the_documents_first_paragraph_with_its_source(knowledge):
    answer = knowledge.answer("¿dónde veo mi boleta?", "es")
    document = next(d for d in load_documents(locale="es") if d.id == "invoices-portal")
    assert answer is not None
    assert answer.text == document.answer
    assert (answer.source.id, answer.source.title, answer.source.path) == (
        "invoices-portal",
        document.title,
        document.path,
    )
    assert answer.source.creditor is None
    assert 0 < answer.score <= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.text = "something else"  # type: ignore[misc]


def test_regional_locales_use_their_language(knowledge):
    chilean = knowledge.answer("¿qué pasa si pago tarde?", "es-CL")
    american = knowledge.answer("what happens if I pay late?", "en_US")
    assert chilean is not None and chilean.source.id == "late-payment" and chilean.source.path.parent.name == "es"
    assert american is not None and american.source.id == "late-payment" and american.source.path.parent.name == "en"


def test_empty_or_stop_word_only_questions_get_no_answer(knowledge):
    assert knowledge.answer("", "es") is None
    assert knowledge.answer("   ", "en") is None
    assert knowledge.answer("hola buenas tardes", "es") is None


def test_a_creditors_document_overrides_the_default_with_the_same_id(creditor_root):
    knowledge = KnowledgeBase(creditor_root)
    own = knowledge.answer("a q hora atienden?", "es", creditor="aguas-del-valle")
    default = knowledge.answer("a q hora atienden?", "es")
    other = knowledge.answer("a q hora atienden?", "es", creditor="acme-energy")
    assert own is not None and own.text.startswith("Aguas del Valle atiende de lunes a viernes")
    assert own.source.creditor == "aguas-del-valle"
    assert default is not None and default.source.creditor is None and default.source.id == "hours-contact"
    assert other is not None and other.text == default.text
    # The creditor's other questions still come from the defaults.
    payment = knowledge.answer("como puedo pagar?", "es", creditor="aguas-del-valle")
    assert payment is not None and payment.source.id == "how-to-pay" and payment.source.creditor is None


def test_indexes_are_built_once_per_language_and_creditor(creditor_root):
    knowledge = KnowledgeBase(creditor_root)
    assert knowledge.answer("a q hora atienden?", "es", creditor="aguas-del-valle") is not None
    shutil.rmtree(creditor_root)
    cached = knowledge.answer("a q hora atienden?", "es-CL", creditor="aguas-del-valle")
    assert cached is not None and cached.source.creditor == "aguas-del-valle"
    assert knowledge.documents("es") == ()  # a new key reads the (now missing) folder


def test_the_threshold_is_tunable():
    question = "puedo pagar en cuotas?"
    assert KnowledgeBase().answer(question, "es") is not None
    assert KnowledgeBase(threshold=Threshold(min_score=0.99)).answer(question, "es") is None
    permissive = KnowledgeBase(threshold=Threshold(min_score=0.0, min_margin=0.0))
    assert permissive.answer("cuál es la capital de Francia", "es") is not None


def test_a_near_tie_is_not_confident_unless_the_best_score_is_sure():
    knowledge = KnowledgeBase(threshold=Threshold(min_score=0.2, min_margin=0.05, sure_score=0.6))
    first, second = load_documents(locale="es")[:2]

    def ranked(best: float, runner_up: float) -> list[Match]:
        return [Match(first, best), Match(second, runner_up)]

    assert knowledge.is_confident(ranked(0.40, 0.30))
    assert not knowledge.is_confident(ranked(0.40, 0.37))  # nearly tied: which one did they mean?
    assert knowledge.is_confident(ranked(0.65, 0.62))  # both are strong; the best is safe to send
    assert not knowledge.is_confident(ranked(0.15, 0.0))  # clear winner, but too weak
    assert knowledge.is_confident([Match(first, 0.40)])


def test_faq_answerer_is_the_engines_port(creditor_root):
    knowledge = KnowledgeBase(creditor_root)
    faq = faq_answerer(knowledge, "aguas-del-valle")
    hours = faq("a q hora atienden?", "es-CL")
    assert hours is not None and hours.text.startswith("Aguas del Valle")
    late = knowledge.answer("what happens if I pay late?", "en")
    assert late is not None
    assert faq("what happens if I pay late?", "en") == FaqAnswer(late.text, late.source.title)
    assert faq("tell me a joke", "en") is None


def test_an_empty_knowledge_base_answers_nothing(tmp_path):
    assert KnowledgeBase(tmp_path).answer("¿dónde veo mi boleta?", "es") is None


def test_building_and_answering_are_fast(capsys):
    builds = []
    for _ in range(3):  # the best of three: a busy machine should not fail the test
        knowledge = KnowledgeBase()
        start = time.perf_counter()
        knowledge.documents("es")
        builds.append(time.perf_counter() - start)
    timings = []
    for question, _ in SPANISH[:40]:
        start = time.perf_counter()
        knowledge.answer(question, "es")
        timings.append(time.perf_counter() - start)
    build, answer = min(builds), statistics.median(timings)
    with capsys.disabled():
        print(f"\nbuild {build * 1000:.0f} ms, answer median {answer * 1000:.2f} ms")
    assert build < 0.5
    assert answer < 0.005


def test_answer_type_is_a_frozen_dataclass():
    assert dataclasses.is_dataclass(Answer)
    assert Answer.__dataclass_params__.frozen  # type: ignore[attr-defined]
